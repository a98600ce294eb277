"""Dataset version benchmark: 1,000,000 labeled predictions with 20 numeric features in
PostgreSQL, versions built and uploaded to a local S3 server (moto's server mode, in a
process of its own, reached over HTTP).

Measures, per repeat (medians printed at the end):
  1. the first version: seconds from the build task's start to a published manifest, with
     every shard uploaded (target: under 20 s);
  2. after relabeling 1% of the rows, drawn at random, the next version: bytes uploaded as a
     share of the first version's (target: at most 5%) and its seconds;
  3. after 1% new labeled rows, the next version's bytes uploaded, likewise (no target);
  4. the peak resident memory of the processes that build (target: under 1 GiB).
Each build runs in a fresh child process, so its peak RSS (getrusage) is its own.

    python bench/datasets.py [--rows 1000000] [--repeat 3] [--relabel 0.01]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import PYTHON, ROOT, bench_env, free_port, fresh_database, manage, median  # noqa: E402

DATABASE = "flywheel_datasets_bench"
FEATURES = [f"f{i}" for i in range(20)]
SLUG = "bench"
BUCKET = "flywheel-bench"
GiB = 1024 ** 3


def sql(env: dict, statement: str, params=None):
    import psycopg

    with psycopg.connect(env["DATABASE_URL"].replace("postgres://", "postgresql://"), autocommit=True) as conn:
        return conn.execute(statement, params).fetchall() if statement.lstrip().upper().startswith("SELECT") \
            else conn.execute(statement, params)


def setup(env: dict, rows: int) -> None:
    """A project and `rows` predictions, each with a current resolved label, written by
    PostgreSQL itself (generate_series): this measures dataset builds, not ingestion."""
    fresh_database(DATABASE)
    manage(env, "migrate", "--noinput", "-v", "0")
    code = (
        "from flywheel.projects import project_create;"
        f"project_create(slug={SLUG!r}, name='Bench', labels=[str(i) for i in range(10)],"
        f" features=[{{'name': n, 'type': 'numeric'}} for n in {FEATURES!r}])"
    )
    manage(env, "shell", "-c", code)
    sql(env, "INSERT INTO flywheel_modelversion (project_id, name, source, artifact_uri, metrics, created_at,"
             f" updated_at) SELECT id, 'v1', 'external', '', '{{}}', now(), now() FROM flywheel_project"
             f" WHERE slug = '{SLUG}'")
    sql(env, f"INSERT INTO flywheel_ingestbatch (project_id, received_at) SELECT id, now() FROM flywheel_project"
             f" WHERE slug = '{SLUG}'")
    add_labeled(env, 1, rows)
    sql(env, "ANALYZE flywheel_prediction")
    sql(env, "ANALYZE labeling_label")


def add_labeled(env: dict, first: int, last: int) -> None:
    """Predictions bench-<first>..bench-<last>, each with a current label."""
    # Feature values like the ingestion benchmark's: numbers with 6 decimals.
    features = ", ".join(f"'{name}', round((random() * 4 - 2)::numeric, 6)" for name in FEATURES)
    sql(env, "INSERT INTO flywheel_prediction (project_id, external_id, model_version_id, label, confidence,"
             " probabilities, least_confidence, margin, entropy, features, input, metadata, audit, batch_id,"
             " created_at, received_at)"
             " SELECT p.id, 'bench-' || g, mv.id, (g %% 10)::text, 0.9, NULL, 0.1, 0.2, 0.3,"
             f" jsonb_build_object({features}),"
             " CASE WHEN g %% 10 = 0 THEN jsonb_build_object('image_url', 's3://bench-images/' || g || '.png')"
             " ELSE '{}'::jsonb END, '{}'::jsonb, false, b.id, now(), now()"
             " FROM flywheel_project p JOIN flywheel_modelversion mv ON mv.project_id = p.id"
             " JOIN flywheel_ingestbatch b ON b.project_id = p.id, generate_series(%s::int, %s::int) g"
             f" WHERE p.slug = '{SLUG}'", [first, last])
    # Labels from annotators mostly, some reviewed, some gold, some trusted feedback.
    sql(env, "INSERT INTO labeling_label (project_id, prediction_id, label, source, weight, is_current, created_at)"
             " SELECT project_id, id, floor(random() * 10)::int::text,"
             " (ARRAY['annotation','annotation','annotation','annotation','annotation','annotation','consensus',"
             "'review','gold','feedback'])[1 + floor(random() * 10)::int], 1.0, true, now() FROM flywheel_prediction"
             " WHERE external_id = ANY(%s)", [[f"bench-{g}" for g in range(first, last + 1)]])


def _has_rows(env: dict, rows: int) -> bool:
    try:
        return sql(env, "SELECT count(*) FROM labeling_label WHERE is_current")[0][0] == rows and \
            sql(env, "SELECT count(*) FROM flywheel_prediction")[0][0] == rows
    except Exception:  # noqa: BLE001 - no database yet
        return False


def relabel(env: dict, share: float, seed: int) -> int:
    """Give `share` of the rows, drawn at random, a new current label (a reviewer's)."""
    ids = np.array([r[0] for r in sql(env, "SELECT prediction_id FROM labeling_label WHERE is_current")])
    chosen = np.random.default_rng(seed).choice(ids, size=int(len(ids) * share), replace=False).tolist()
    sql(env, "WITH old AS (UPDATE labeling_label SET is_current = false"
             "   WHERE is_current AND prediction_id = ANY(%s) RETURNING project_id, prediction_id, label)"
             " INSERT INTO labeling_label (project_id, prediction_id, label, source, weight, is_current, created_at)"
             " SELECT project_id, prediction_id, ((label::int + 1) %% 10)::text, 'review', 1.0, true, now() FROM old",
        [chosen])
    return len(chosen)


class MotoServer:
    """The local S3 server in its own process, as a deployment's store would be."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        code = ("import logging, time; logging.disable(logging.INFO);"
                "from moto.server import ThreadedMotoServer;"
                f"ThreadedMotoServer(ip_address='127.0.0.1', port={self.port}, verbose=False).start();"
                "time.sleep(10**9)")
        self.process = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.client().list_buckets()
                return self
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise SystemExit("the S3 server did not start")

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="bench",
                            aws_secret_access_key="bench")

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def build_in_child(env: dict) -> dict:
    """Make a version through the service and its Celery task (run inline), in a fresh
    process; returns its stats and the process's peak RSS."""
    result = subprocess.run([PYTHON, __file__, "--child"], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"build failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def child() -> None:
    import django

    django.setup()
    from flywheel.datasets import services as datasets
    from flywheel.models import DatasetVersion, Project

    project = Project.objects.get(slug=SLUG)
    started = time.perf_counter()
    version = datasets.dataset_version_create(project=project, note="bench")  # the task runs inline
    seconds = time.perf_counter() - started
    version = DatasetVersion.objects.get(pk=version.pk)
    print(json.dumps({"number": version.number, "status": version.status, "error": version.error,
                      "seconds": seconds, "stats": version.stats, "rows": version.counts.get("rows"),
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--relabel", type=float, default=0.01)
    parser.add_argument("--reuse-data", action="store_true",
                        help="keep the database of an earlier run if it has the rows (faster reruns)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return

    env = bench_env(DATABASE, DATABASE_POOL="false", CELERY_TASK_ALWAYS_EAGER="true", LOG_LEVEL="WARNING")
    started = time.perf_counter()
    if not (args.reuse_data and _has_rows(env, args.rows)):
        setup(env, args.rows)
    print(f"setup: {args.rows:,} labeled predictions with {len(FEATURES)} features "
          f"in {time.perf_counter() - started:.0f} s", flush=True)

    firsts, seconds, shares, peaks, new_rows_shares = [], [], [], [], []
    with MotoServer() as s3:
        for repeat in range(args.repeat):
            bucket = f"{BUCKET}-{repeat}"
            s3.client().create_bucket(Bucket=bucket)
            run_env = {**env, "FLYWHEEL_STORAGE_BACKEND": "s3", "S3_BUCKET": bucket, "S3_ENDPOINT_URL": s3.url,
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
            sql(env, "DELETE FROM flywheel_datasetversion")  # each repeat starts without a parent
            # Rows a previous repeat added go, so that every repeat starts from the same data.
            sql(env, f"DELETE FROM labeling_label WHERE prediction_id > {args.rows}")
            sql(env, f"DELETE FROM flywheel_prediction WHERE id > {args.rows}")
            first = build_in_child(run_env)
            changed = relabel(env, args.relabel, seed=repeat)
            second = build_in_child(run_env)
            added = int(args.rows * args.relabel)
            add_labeled(env, args.rows + 1, args.rows + added)
            third = build_in_child(run_env)
            for run in (first, second, third):
                if run["status"] != "ready":
                    raise SystemExit(f"version {run['number']} is {run['status']}: {run['error']}")
            share = second["stats"]["bytes_uploaded"] / first["stats"]["bytes_uploaded"]
            new_rows_share = third["stats"]["bytes_uploaded"] / first["stats"]["bytes_uploaded"]
            new_rows_shares.append(new_rows_share)
            firsts.append(first["stats"]["seconds"])
            seconds.append(second["stats"]["seconds"])
            shares.append(share)
            peaks.append(max(first["peak_rss"], second["peak_rss"], third["peak_rss"]))
            print(f"repeat {repeat + 1}: first version {first['rows']:,} rows, "
                  f"{first['stats']['bytes_uploaded'] / 1e6:.1f} MB in {first['stats']['shards_uploaded']} shards, "
                  f"{first['stats']['seconds']:.1f} s {first['stats']['timings']}; "
                  f"after relabeling {changed:,} rows: {second['stats']['bytes_uploaded'] / 1e6:.2f} MB "
                  f"({share:.2%}) in {second['stats']['shards_uploaded']} shards, "
                  f"{second['stats']['seconds']:.1f} s {second['stats']['timings']}; "
                  f"after {added:,} new labeled rows: {third['stats']['bytes_uploaded'] / 1e6:.2f} MB "
                  f"({new_rows_share:.2%}) in {third['stats']['shards_uploaded']} shards, "
                  f"{third['stats']['seconds']:.1f} s; peak RSS {peaks[-1] / 2**20:.0f} MiB", flush=True)

    print()
    print(f"first version built and uploaded (median of {args.repeat}): {median(firsts):.1f} s   (target < 20 s)")
    print(f"next version after relabeling {args.relabel:.0%}: uploads {median(shares):.2%} of the first version's "
          f"bytes (target <= 5%), built in {median(seconds):.1f} s")
    print(f"then {args.relabel:.0%} new labeled rows: the next version uploads {median(new_rows_shares):.2%} "
          "of the first version's bytes")
    print(f"peak RSS of the building process (median): {median(peaks) / 2**20:.0f} MiB   (target < 1024 MiB)")
    ok = median(firsts) < 20 and median(shares) <= 0.05 and median(peaks) < GiB
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
