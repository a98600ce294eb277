"""flywheel_client: the Python client apps, annotator tools and ops scripts use to talk to a
Flywheel service. Standard library only (orjson is used when installed); no Django."""

from flywheel_client.client import Client, IngestSummary
from flywheel_client.errors import FlywheelError

__all__ = ["Client", "FlywheelError", "IngestSummary"]
