"""Prometheus metrics. Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes every worker write
to shared files that /metrics sums; without it, the process's own registry is served."""

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

PREDICTIONS_INGESTED = Counter(
    "flywheel_predictions_ingested_total", "Predictions received, by outcome.", ["project", "outcome"]
)
PREDICTIONS_ROUTED = Counter(
    "flywheel_predictions_routed_total", "Predictions sent to the annotation queue, by reason.", ["project", "reason"]
)
INGEST_REQUESTS = Counter(
    "flywheel_ingest_requests_total", "Ingestion requests, by kind and status.", ["kind", "status"]
)
INGEST_SECONDS = Histogram(
    "flywheel_ingest_request_seconds", "Time to validate, store and route one ingestion request.", ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INGEST_BATCH_SIZE = Histogram(
    "flywheel_ingest_batch_size", "Predictions per ingestion request.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000),
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
