"""gunicorn settings for the web service (docker-compose and bench/ingest.py):
    gunicorn config.asgi:application -c config/gunicorn.py"""

import gc
import os

from prometheus_client import multiprocess

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
# uvicorn workers run the ASGI app: the ingestion gateway in front of Django.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "uvicorn_worker.UvicornWorker")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
# Loaded once in the master and forked: workers start fast and share memory.
preload_app = True


def child_exit(server, worker):
    # Metrics of a worker that exited stay counted, but its live gauges are dropped.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def pre_fork(server, worker):
    # What the master loaded (preload_app: Django, DRF, numpy, ~170,000 objects) lives as
    # long as the worker. Frozen, the cycle collector stops scanning it on every full
    # collection, which took 150 ms or more: a pause for whichever requests the worker
    # was serving, and most of the annotation queue's p99 claim latency. It also keeps
    # those pages shared with the master instead of copied on write.
    gc.freeze()
