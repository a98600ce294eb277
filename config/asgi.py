"""ASGI entry point (gunicorn with uvicorn workers): the gateways for the hottest API
routes (prediction ingestion; an annotator's claims and annotations) in front of
Django, sharing one pool of database threads."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from common.gateway import database_threads  # noqa: E402  (needs Django set up)
from flywheel.ingest.gateway import IngestGateway  # noqa: E402
from labeling.gateway import AnnotatorGateway  # noqa: E402

run_sync = database_threads()
application = IngestGateway(AnnotatorGateway(django_application, run_sync=run_sync), run_sync=run_sync)
