"""Sustained load: the stack as deployed, fed batch traffic for minutes while the profiler,
routing and a retention run work, and whether ingestion holds its rate.

The stack: gunicorn with uvicorn (ASGI) workers, a Celery worker and beat, PostgreSQL (a
scratch database), a Redis of its own and a local S3 server (the archive). Before the
traffic, --old predictions made 100 days ago are logged and profiled: retention's work. The
traffic: --clients closed-loop connections each POSTing batches of --batch predictions with
20 numeric features (about 3% below the routing threshold, 2% audited), every id new. A
third of the way in, the retention task is sent to the worker, as the beat sends it daily;
the beat sends the profiler's every minute.

Prints predictions/s sustained, acknowledged against stored (each once), the profile lag
at the end (the age of the oldest stored batch not yet counted into the drift profiles),
the first and the last minute's throughput, and what retention did.
Targets: 10,000 predictions/s; lag under 60 s; last minute within 10% of the first.

    python bench/sustained.py [--seconds 300] [--clients 4] [--batch 1000] [--workers 2]

Loopback only; stops by itself. With --seconds under 180 the first and last minutes become
the first and last thirds.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from bench import loadgen  # noqa: E402
from bench.common import Gunicorn, bench_env, fresh_database, manage, request  # noqa: E402
from bench.soak import Celery  # noqa: E402

PROJECT = "sustained"
FEATURES = [f"f{i}" for i in range(20)]
BUCKET = "flywheel-sustained"
PATH = f"/api/v1/projects/{PROJECT}/predictions/"


class Batches:
    """Request bytes for batch after batch of new predictions: the features of a few
    thousand predictions rendered once, each request giving them fresh ids, so the load
    generator spends its time on the socket, not on JSON."""

    def __init__(self, token: str, batch: int, seed: int = 7, distinct: int = 4000):
        rng = np.random.default_rng(seed)
        values = rng.normal(size=(distinct, len(FEATURES))).round(5)
        uncertain = rng.random(distinct) < 0.03
        confidence = np.where(uncertain, rng.uniform(0.3, 0.69, distinct), rng.uniform(0.71, 0.999, distinct))
        labels = rng.integers(0, 10, distinct)
        self.tails = [orjson.dumps({"model_version": "v1", "label": str(labels[i]),
                                    "confidence": round(float(confidence[i]), 4),
                                    "features": dict(zip(FEATURES, values[i].tolist(), strict=True))})[1:]
                      for i in range(distinct)]
        self.token, self.batch, self.sent = token, batch, 0

    def next(self) -> bytes:
        start = self.sent * self.batch
        self.sent += 1
        items = b",".join(b'{"id":"s-%d",' % (start + i) + self.tails[(start + i) % len(self.tails)]
                          for i in range(self.batch))
        return loadgen.render_post(PATH, b'{"predictions":[' + items + b"]}", self.token)


async def _connection(port: int, batches: Batches, stop_at: float, acks: list, failures: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            body = batches.next()
            writer.write(body)
            status, data, close = await loadgen._read_response(reader)
            if status == 201:
                acks.append((time.perf_counter(), orjson.loads(data)["created"]))
            else:
                failures[status] = failures.get(status, 0) + 1
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


def traffic(port: int, batches: Batches, clients: int, seconds: float, on_third) -> dict:
    acks: list[tuple[float, int]] = []
    failures: dict[int, int] = {}

    async def main():
        started = time.perf_counter()
        stop_at = started + seconds
        loop = asyncio.get_running_loop()
        loop.call_later(seconds / 3, on_third)
        await asyncio.gather(*(_connection(port, batches, stop_at, acks, failures) for _ in range(clients)))
        return started

    started = asyncio.run(main())
    return {"started": started, "acks": acks, "failures": failures, "seconds": time.perf_counter() - started}


def window_rate(acks, start: float, end: float) -> float:
    return sum(n for t, n in acks if start <= t < end) / (end - start)


def prefill_old(port: int, token: str, count: int) -> None:
    """`count` predictions made 100 days ago, logged through the API: retention's work."""
    made = (datetime.now(UTC) - timedelta(days=100)).isoformat()
    rng = np.random.default_rng(3)
    for start in range(0, count, 1000):
        items = [{"id": f"old-{start + i}", "model_version": "v1", "label": str(i % 10), "confidence": 0.9,
                  "created_at": made, "features": dict(zip(FEATURES, rng.normal(size=20).round(5).tolist(),
                                                           strict=True))}
                 for i in range(min(1000, count - start))]
        status, data = request("POST", port, PATH, orjson.dumps({"predictions": items}), token)
        assert status == 201, data[:300]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300, help="Traffic duration (default 5 minutes).")
    parser.add_argument("--clients", type=int, default=4, help="Concurrent connections.")
    parser.add_argument("--batch", type=int, default=1000, help="Predictions per request.")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn's uvicorn workers.")
    parser.add_argument("--old", type=int, default=50_000, help="Predictions for retention to archive.")
    parser.add_argument("--database", default="flywheel_bench_sustained")
    parser.add_argument("--json", help="Also write the report here.")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-sustained-"))

    from tests.redis_server import RedisServer
    from tests.s3 import S3Server

    redis_server, s3 = RedisServer(), S3Server()
    redis_server.start()
    s3.start()
    s3.client().create_bucket(Bucket=BUCKET)
    env = bench_env(args.database, CELERY_BROKER_URL=redis_server.url, CELERY_TASK_ALWAYS_EAGER="false",
                    CELERY_TASK_DEFAULT_QUEUE="sustained", LOG_LEVEL="WARNING",
                    **{**s3.settings_for(BUCKET), "S3_PREFIX": "sustained"})
    fresh_database(args.database)
    manage(env, "migrate", "--noinput", "-v", "0")
    os.environ.update(env)
    import django

    django.setup()
    from django.db.models import Min
    from django.utils import timezone

    from config.celery import app
    from flywheel.ingest import profiling
    from flywheel.models import IngestBatch, Prediction, Project, RetentionRun
    from flywheel.projects import project_create

    project_create(slug=PROJECT, name="Sustained", labels=[str(i) for i in range(10)],
                   features=[{"name": name, "type": "numeric"} for name in FEATURES],
                   routing_policy={"threshold": 0.3, "audit_rate": 0.02, "daily_budget": 10_000_000},
                   labeling={"gold_rate": 0.0})
    token = manage(env, "flywheel_user", "sustained-app", "--role", "app", "--project", PROJECT).strip()
    project = Project.objects.get(slug=PROJECT)

    worker, beat = Celery("worker", env, workdir), Celery("beat", env, workdir)
    report: dict = {}
    try:
        with Gunicorn(env, workers=args.workers) as web:
            prefill_old(web.port, token, args.old)
            profiling.profiles_update(project_id=project.pk, force_grids=True)
            worker.start()
            beat.start()
            time.sleep(3)
            batches = Batches(token, args.batch)
            sent_at = []

            def send_retention():
                sent_at.append(time.perf_counter())
                app.send_task("flywheel.retention.run")

            outcome = traffic(web.port, batches, args.clients, args.seconds, send_retention)
            ended = timezone.now()
        oldest = IngestBatch.objects.filter(project=project, profiled_at__isnull=True).aggregate(
            oldest=Min("received_at"))["oldest"]
        lag = (ended - oldest).total_seconds() if oldest else 0.0
        # The retention run, however long it takes to finish after the traffic.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not RetentionRun.objects.filter(
                project=project, status__in=["succeeded", "failed"]).exists():
            time.sleep(1)
        run = RetentionRun.objects.filter(project=project).first()
    finally:
        worker.stop()
        beat.stop()

    try:
        acks, started, seconds = outcome["acks"], outcome["started"], outcome["seconds"]
        acknowledged = sum(n for _, n in acks)
        stored = Prediction.objects.filter(project=project, external_id__startswith="s-").count()
        window = 60.0 if seconds >= 180 else seconds / 3
        first = window_rate(acks, started, started + window)
        last = window_rate(acks, started + seconds - window, started + seconds)
        report = {
            "seconds": round(seconds, 1), "clients": args.clients, "batch": args.batch, "workers": args.workers,
            "cores": os.cpu_count(), "predictions_per_s": round(acknowledged / seconds),
            "acknowledged": acknowledged, "stored": stored, "requests_failed": outcome["failures"],
            "profile_lag_s": round(lag, 1), "window_s": round(window, 1), "first_window_per_s": round(first),
            "last_window_per_s": round(last), "last_vs_first": round(last / first, 3) if first else None,
            "retention": None if run is None else {
                "status": run.status, "archived": run.archived, "removed": run.removed, "held": run.held,
                "seconds": round((run.finished_at - run.created_at).total_seconds(), 1) if run.finished_at else None,
                "sent_at_s": round(sent_at[0] - started, 1) if sent_at else None, "error": run.error[:200]},
        }
    finally:
        s3.stop()
        redis_server.stop()
    problems = []
    if report["predictions_per_s"] < 10_000:
        problems.append(f"{report['predictions_per_s']:,} predictions/s, under 10,000")
    if report["acknowledged"] != report["stored"]:
        problems.append(f"acknowledged {report['acknowledged']:,} but stored {report['stored']:,}")
    if report["profile_lag_s"] >= 60:
        problems.append(f"profile lag {report['profile_lag_s']} s")
    if report["last_vs_first"] is None or abs(report["last_vs_first"] - 1) > 0.10:
        problems.append(f"last window at {report['last_vs_first']} of the first")
    if not report["retention"] or report["retention"]["status"] != "succeeded":
        problems.append("the retention run did not succeed")
    report["problems"] = problems
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    print(f"\nsustained: {report['predictions_per_s']:,} predictions/s over {report['seconds']} s; acknowledged "
          f"{report['acknowledged']:,}, stored {report['stored']:,}; profile lag {report['profile_lag_s']} s; "
          f"last/first window {report['last_vs_first']}: "
          + ("OK" if not problems else "MISSED: " + "; ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
