"""Soak: mixed traffic against the whole stack while faults are injected, then a count of
what was lost or stored twice.

The stack: gunicorn (2 workers), a Celery worker and beat, PostgreSQL (a scratch database),
a Redis of its own on a loopback port (so restarting it disturbs nothing else) and a local
S3 server. Traffic, through flywheel_client with its retries: batch and single ingestion
(some batches sent twice, as an app does after a lost answer), end-user feedback,
annotators who claim, label, skip or walk away from tasks, and ops who ask for dataset
versions and drift checks. Faults: the Celery worker is SIGKILLed and replaced, Redis is
stopped and started again empty, the S3 server is stopped for a few seconds.

Afterwards the beat's sweeps run (as the beat would) and the checks: every acknowledged
prediction stored exactly once, every routed prediction has its task and none is held by
an expired lease, every resolved label is in the next dataset version, and the profiles
equal a recount from the predictions table.

    python bench/soak.py [--seconds 150] [--json soak.json]

Loopback only; stops by itself: traffic for --seconds (at most 240), then at most about
two minutes of recovery and checks. Exits 1 when a check fails.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.common import PYTHON, ROOT, Gunicorn, bench_env, fresh_database, manage  # noqa: E402
from flywheel_client import Client, FlywheelError  # noqa: E402

PROJECT = "soak"
LABELS = [str(i) for i in range(10)]
FEATURES = [f"f{i}" for i in range(8)]
MAX_SECONDS = 240
BUCKET = "flywheel-soak"


# --- The stack -------------------------------------------------------------------------------------


class Celery:
    """`celery -A config worker|beat` on the soak's queue, in a process group of its own."""

    def __init__(self, kind: str, env: dict, logdir: Path):
        self.kind, self.env, self.logdir = kind, env, logdir
        self.process = None
        self.log_path: Path | None = None
        self.starts = 0

    def start(self) -> None:
        celery = str(Path(PYTHON).parent / "celery")
        self.starts += 1
        if self.kind == "beat":
            args = ["beat", "--schedule", str(self.logdir / "beat-schedule")]
        else:
            # The command users run (docker-compose.yml), on the soak's queue.
            args = ["worker", "-Q", self.env["CELERY_TASK_DEFAULT_QUEUE"], "--concurrency=2", "--pool=prefork",
                    "-n", f"soak-{uuid.uuid4().hex[:4]}@%h"]
        self.log_path = self.logdir / f"{self.kind}-{self.starts}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen([celery, "-A", "config", *args, "--loglevel=INFO"], cwd=ROOT,
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def exited(self) -> str | None:
        """None while the process runs; else why it stopped, from the end of its log."""
        if self.process is None or self.process.poll() is None:
            return None
        lines = self.log_path.read_text(errors="replace").splitlines()
        reasons = [line for line in lines if "CRITICAL" in line or "Error" in line]
        return (reasons or lines or ["(no output)"])[-1][:300]

    def kill(self) -> None:
        """SIGKILL the whole group: tasks in flight get no chance to ack or clean up."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


# --- Traffic ---------------------------------------------------------------------------------------


class Tally:
    """What the traffic did, shared by its threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = Counter()
        self.failures = Counter()
        self.retries = 0
        self.acknowledged: dict[str, dict] = {}  # prediction id -> its routing result
        self.resent_batches = 0
        self.resent_created = 0

    def count(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.requests[kind] += n

    def fail(self, kind: str, error: FlywheelError) -> None:
        with self.lock:
            self.failures[f"{kind}:{error.status or error.code}"] += 1


class CountingClient(Client):
    """The app's client, counting the retries it makes."""

    def __init__(self, *args, tally: Tally, **kwargs):
        super().__init__(*args, max_retries=10, backoff=0.2, max_backoff=2.0, timeout=30, **kwargs)
        self.tally = tally

    def _sleep_before_retry(self, attempt, retry_after):
        with self.tally.lock:
            self.tally.retries += 1
        super()._sleep_before_retry(attempt, retry_after)


def _prediction(rng: random.Random, prediction_id: str) -> dict:
    label = rng.choice(LABELS)
    return {"id": prediction_id, "model_version": "v1", "label": label, "confidence": round(rng.random(), 4),
            "features": {name: rng.gauss(0, 1) for name in FEATURES}}


def batch_ingestion(client, tally, stop, seed):
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        batch = [_prediction(rng, f"b{seed}-{n}-{i}") for i in range(rng.randint(20, 200))]
        n += 1
        try:
            summary = client.log_predictions(PROJECT, batch)
            tally.count("ingest_batch")
            with tally.lock:
                tally.acknowledged.update({r["id"]: r for r in summary.results})
            if rng.random() < 0.1:  # the answer was "lost": the app sends the same batch again
                again = client.log_predictions(PROJECT, batch)
                tally.count("ingest_batch")
                with tally.lock:
                    tally.resent_batches += 1
                    tally.resent_created += again.created
        except FlywheelError as error:
            tally.fail("ingest_batch", error)


def single_ingestion(client, tally, stop, seed):
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        try:
            result = client.log_prediction(PROJECT, **_prediction(rng, f"s{seed}-{n}"))
            tally.count("ingest_single")
            with tally.lock:
                tally.acknowledged[result["id"]] = result
        except FlywheelError as error:
            tally.fail("ingest_single", error)
        n += 1


def feedback(client, tally, stop, seed):
    rng = random.Random(seed)
    while not stop.wait(0.05):
        with tally.lock:
            known = list(tally.acknowledged)[-2000:]
        if not known:
            continue
        items = []
        for prediction_id in rng.sample(known, min(20, len(known))):
            kind = rng.choice(["confirm", "confirm", "correct", "reject"])
            item = {"prediction_id": prediction_id, "kind": kind, "user": f"user-{rng.randint(1, 50)}"}
            if kind == "correct":
                item["label"] = rng.choice(LABELS)
            items.append(item)
        try:
            client.feedback(PROJECT, items)
            tally.count("feedback")
        except FlywheelError as error:
            tally.fail("feedback", error)


def annotator(client, tally, stop, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            task = client.next_task(PROJECT)
            tally.count("claim")
            if task is None:
                stop.wait(0.2)
                continue
            choice = rng.random()
            if choice < 0.05:
                continue  # walks away: the lease runs out and the sweep returns the task
            if choice < 0.12:
                client.skip(task["id"])
                tally.count("skip")
                continue
            client.annotate(task["id"], rng.choice(LABELS), lead_time_s=rng.uniform(1, 6))
            tally.count("annotate")
        except FlywheelError as error:
            tally.fail("annotate", error)  # a lease lost to the sweep is a 409, as it should be


def ops(client, tally, stop, requests_build):
    while not stop.is_set():
        try:
            if requests_build.is_set() or tally.requests["dataset"] == 0:
                requests_build.clear()
                client.create_dataset(PROJECT, note="soak")
                tally.count("dataset")
            client.drift_check(PROJECT)
            tally.count("drift_check")
            client.stats(PROJECT)
            tally.count("stats")
        except FlywheelError as error:
            tally.fail("ops", error)
        stop.wait(5)


# --- Faults ----------------------------------------------------------------------------------------


def inject_faults(seconds, stop, worker, redis_server, s3, requests_build, faults):
    def at(fraction):
        return stop.wait(max(0.0, start + fraction * seconds - time.monotonic()))

    start = time.monotonic()
    if not at(0.2):
        requests_build.set()
        time.sleep(0.5)
        worker.kill()
        faults.append({"fault": "celery worker SIGKILL", "at_s": round(time.monotonic() - start, 1)})
        time.sleep(2)
        worker.start()
    if not at(0.4):
        redis_server.stop()
        down_at = time.monotonic()
        requests_build.set()  # asked for while the broker is away
        stop.wait(min(8, seconds * 0.1))
        redis_server.start()
        faults.append({"fault": "redis stopped, restarted empty", "at_s": round(down_at - start, 1),
                       "down_s": round(time.monotonic() - down_at, 1)})
    if not at(0.6):
        s3.stop()
        down_at = time.monotonic()
        requests_build.set()  # a build that meets the outage
        stop.wait(min(8, seconds * 0.1))
        s3.start()
        faults.append({"fault": "s3 stopped", "at_s": round(down_at - start, 1),
                       "down_s": round(time.monotonic() - down_at, 1)})


# --- Checks ----------------------------------------------------------------------------------------


def wait_for_builds(timeout: float) -> None:
    from flywheel.datasets import services as datasets
    from flywheel.models import DatasetStatus, DatasetVersion

    deadline = time.monotonic() + timeout
    while DatasetVersion.objects.filter(status=DatasetStatus.BUILDING).exists():
        if time.monotonic() > deadline:
            return
        # What the beat's sweep does, without waiting for its five minutes.
        datasets.dataset_versions_sweep()
        time.sleep(1)


def profile_snapshot(project_id: int) -> dict:
    from monitoring.models import Profile

    return {(p.hour, p.source, p.name): (p.count, bytes(p.bins)) for p in Profile.objects.filter(project_id=project_id)}


def check(tally: Tally, ops_client: Client, settle_s: float) -> dict:
    from django.db.models import Count
    from django.utils import timezone

    from flywheel.datasets import selectors as dataset_selectors
    from flywheel.ingest import profiling
    from flywheel.models import DatasetStatus, DatasetVersion, Prediction, Project
    from labeling import services as labeling_services
    from labeling.models import Label, Lease, Task, TaskStatus

    project = Project.objects.get(slug=PROJECT)
    out = {}

    # Predictions: every acknowledged one stored, none twice.
    stored = set(Prediction.objects.filter(project=project).values_list("external_id", flat=True))
    acknowledged = set(tally.acknowledged)
    twice = Prediction.objects.filter(project=project).values("external_id").annotate(n=Count("id")) \
        .filter(n__gt=1).count()
    out["predictions"] = {"acknowledged": len(acknowledged), "stored": len(stored),
                          "lost": len(acknowledged - stored), "duplicated": twice + tally.resent_created}

    # Tasks: every routed answer's task exists; no task held past its lease once the sweep ran.
    time.sleep(settle_s)
    returned = labeling_services.leases_sweep()
    routed_task_ids = {r["task_id"] for r in tally.acknowledged.values() if r.get("routed")}
    existing = set(Task.objects.filter(pk__in=routed_task_ids).values_list("pk", flat=True))
    now = timezone.now()
    held_past_lease = Lease.objects.filter(task__project=project, expires_at__lt=now).count() + \
        Task.objects.filter(project=project, status=TaskStatus.LEASED).exclude(leases__expires_at__gte=now).count()
    out["tasks"] = {
        "routed": len(routed_task_ids), "missing": len(routed_task_ids - existing),
        "leases_returned_by_sweep": returned, "held_past_lease": held_past_lease,
        "by_status": dict(Counter(Task.objects.filter(project=project).values_list("status", flat=True))),
    }

    # Dataset versions: builds that met the faults end ready once the sweeps resend them.
    wait_for_builds(timeout=90)
    statuses = Counter(DatasetVersion.objects.filter(project=project).values_list("status", flat=True))
    failed = list(DatasetVersion.objects.filter(project=project, status=DatasetStatus.FAILED)
                  .values_list("number", "error"))
    out["dataset_versions_during_soak"] = {"by_status": dict(statuses), "failed": failed}

    # Every resolved label is in the next version, with its label.
    number = ops_client.create_dataset(PROJECT, note="after the soak")["version"]
    deadline = time.monotonic() + 90
    while ops_client.dataset(PROJECT, number)["status"] == "building" and time.monotonic() < deadline:
        time.sleep(0.5)
    version = DatasetVersion.objects.get(project=project, number=number)
    labels = set(Label.objects.filter(project=project, is_current=True).values_list("prediction_id", "label"))
    in_version = set()
    if version.status == DatasetStatus.READY:
        for table in dataset_selectors.version_partitions(version=version):
            in_version.update(zip(table.column("row_id").to_pylist(), table.column("label").to_pylist(), strict=True))
    out["next_dataset_version"] = {"number": number, "status": version.status, "resolved_labels": len(labels),
                                   "rows": len(in_version), "missing": len(labels - in_version),
                                   "extra": len(in_version - labels)}

    # Profiles: the incremental counts equal a recount from the predictions table.
    profiling.profiles_update(project_id=project.pk, force_grids=True)
    incremental = profile_snapshot(project.pk)
    profiling.profiles_rebuild(project_id=project.pk)
    recount = profile_snapshot(project.pk)
    # Every prediction is counted once in its hour's profile of the predicted label.
    counted = sum(count for (_hour, _source, name), (count, _bins) in incremental.items() if name == "label")
    out["profiles"] = {"fields_hours": len(incremental), "predictions_counted": counted,
                       "match_recount": incremental == recount and counted == len(stored)}
    return out


def verdict(report: dict) -> list[str]:
    problems = []
    p, t, d = report["predictions"], report["tasks"], report["next_dataset_version"]
    if p["lost"] or p["duplicated"]:
        problems.append(f"predictions lost {p['lost']}, duplicated {p['duplicated']}")
    if t["missing"] or t["held_past_lease"]:
        problems.append(f"tasks missing {t['missing']}, held past their lease {t['held_past_lease']}")
    if report["worker"]["exited"]:
        problems.append(f"the Celery worker exited by itself: {report['worker']['exited']}")
    if report["dataset_versions_during_soak"]["by_status"].get("building"):
        problems.append("a dataset version is still building after recovery")
    if d["status"] != "ready" or d["missing"] or d["extra"]:
        problems.append(f"next dataset version {d['status']}: {d['missing']} labels missing, {d['extra']} extra")
    if not report["profiles"]["match_recount"]:
        problems.append("profiles differ from a recount")
    if report["faults_injected"] < 3:
        problems.append(f"only {report['faults_injected']} of 3 faults were injected")
    return problems


# --- Run -------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=150, help=f"Traffic duration (at most {MAX_SECONDS}).")
    parser.add_argument("--database", default="flywheel_soak")
    parser.add_argument("--json", help="Also write the report here.")
    args = parser.parse_args(argv)
    seconds = min(args.seconds, MAX_SECONDS)
    # Stopped from outside: still take the stack down (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-soak-"))

    from tests.redis_server import RedisServer
    from tests.s3 import S3Server

    redis_server, s3 = RedisServer(), S3Server()
    redis_server.start()
    s3.start()
    s3.client().create_bucket(Bucket=BUCKET)
    env = bench_env(
        args.database, CELERY_BROKER_URL=redis_server.url, CELERY_TASK_ALWAYS_EAGER="false",
        CELERY_TASK_DEFAULT_QUEUE="soak", CELERY_VISIBILITY_TIMEOUT=10, FLYWHEEL_LEASE_SECONDS=10,
        FLYWHEEL_DATASET_STALE_SECONDS=10, FLYWHEEL_ACCESS_CACHE_SECONDS=0, LOG_LEVEL="INFO",
        **{**s3.settings_for(BUCKET), "S3_PREFIX": "soak"},
    )
    fresh_database(args.database)
    manage(env, "migrate", "--noinput", "-v", "0")
    os.environ.update(env)
    import django

    django.setup()
    from flywheel.projects import project_create

    project_create(slug=PROJECT, name="Soak", labels=LABELS,
                   features=[{"name": name, "type": "numeric"} for name in FEATURES],
                   routing_policy={"threshold": 0.6, "audit_rate": 0.05, "daily_budget": 1_000_000},
                   labeling={"gold_rate": 0.0})
    tokens = {role: manage(env, "flywheel_user", f"soak-{role}", "--role", role.rstrip("0123456789"),
                           "--project", PROJECT).strip()
              for role in ("app", "ops", "annotator1", "annotator2", "annotator3")}

    worker, beat = Celery("worker", env, workdir), Celery("beat", env, workdir)
    tally, stop, requests_build, faults = Tally(), threading.Event(), threading.Event(), []
    started = time.monotonic()
    try:
        worker.start()
        beat.start()
        with Gunicorn(env, workers=2) as web:
            url = f"http://127.0.0.1:{web.port}"

            def client(role):
                return CountingClient(url, tokens[role], tally=tally)

            ops_client = client("ops")
            threads = [
                threading.Thread(target=batch_ingestion, args=(client("app"), tally, stop, 1)),
                threading.Thread(target=batch_ingestion, args=(client("app"), tally, stop, 2)),
                threading.Thread(target=single_ingestion, args=(client("app"), tally, stop, 3)),
                threading.Thread(target=feedback, args=(client("app"), tally, stop, 4)),
                threading.Thread(target=ops, args=(ops_client, tally, stop, requests_build)),
                *[threading.Thread(target=annotator, args=(client(f"annotator{i}"), tally, stop, 10 + i))
                  for i in (1, 2, 3)],
                threading.Thread(target=inject_faults,
                                 args=(seconds, stop, worker, redis_server, s3, requests_build, faults)),
            ]
            for thread in threads:
                thread.start()
            stop.wait(seconds)
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            traffic_s = time.monotonic() - started
            report = {"seconds": round(traffic_s, 1), "requests": sum(tally.requests.values()),
                      "requests_by_kind": dict(tally.requests), "client_retries": tally.retries,
                      "failed_requests": dict(tally.failures), "resent_batches": tally.resent_batches,
                      "faults_injected": len(faults), "faults": faults}
            report.update(check(tally, ops_client, settle_s=float(env["FLYWHEEL_LEASE_SECONDS"])))
            # A worker that exited by itself (not the SIGKILL the soak injects, after which it
            # is started again) leaves every later task undone.
            report["worker"] = {"starts": worker.starts, "exited": worker.exited()}
    finally:
        stop.set()
        worker.stop()
        beat.stop()
        s3.stop()
        redis_server.stop()
    report["total_seconds"] = round(time.monotonic() - started, 1)
    report["problems"] = verdict(report)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    print(f"\nsoak: {report['requests']} requests in {report['seconds']} s, {report['faults_injected']} faults, "
          f"lost {report['predictions']['lost']}, duplicated {report['predictions']['duplicated']}: "
          + ("OK" if not report["problems"] else "FAILED: " + "; ".join(report["problems"])))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
