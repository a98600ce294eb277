"""ASGI entry point (gunicorn with uvicorn workers): the ingestion gateway in front of Django."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from flywheel.gateway import IngestGateway  # noqa: E402  (needs Django set up)

application = IngestGateway(django_application)
