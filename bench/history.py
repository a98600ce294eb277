"""History benchmark: does the cost of the loop's hot paths grow with the predictions a
project has stored? One project on PostgreSQL, measured at --small predictions (default
100,000, all of the last 14 days) and again after PostgreSQL itself (INSERT ... SELECT
generate_series) has added older history up to --predictions (default 10,000,000, spread
over the 12 weeks before): the recent traffic, the queue and the labeled rows stay the
same, only history grows.

Measured at each size, in this process through the API's views and the services (medians):
  1. batch ingestion: predictions/s over POSTs of 1,000 (20 numeric features);
  2. a claim: ms per POST .../tasks/next/ (5,000 open tasks);
  3. GET .../stats/: ms;
  4. a 24-hour drift check: ms (profiles of the window against a reference);
  5. a dataset version after 1% new labels (10,000 labeled rows): seconds to build.
Target: each within 1.5x of its figure at the small size.

    python bench/history.py [--predictions 10000000] [--small 100000] [--repeat 5] [--database NAME]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import bench_env, fresh_database, manage  # noqa: E402

FEATURES = [f"f{i}" for i in range(20)]
SLUG = "history"
OPEN_TASKS = 5_000
LABELED = 10_000
CHUNK = 1_000_000
_FEATURES_SQL = ", ".join(f"'{name}', round((random() * 4 - 2)::numeric, 6)" for name in FEATURES)


def sql(statement: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else cursor.rowcount


def generate(project, version, first: int, last: int, *, days_from: int, days_to: int, profiled: bool) -> None:
    """Predictions h-<first>..h-<last> written by PostgreSQL, created between days_from and
    days_to days ago, as one ingest batch (profiled already when `profiled`), with their keys."""
    from django.utils import timezone

    from flywheel.models import IngestBatch

    now = timezone.now()
    for start in range(first, last + 1, CHUNK):
        end = min(last, start + CHUNK - 1)
        batch = IngestBatch.objects.create(project=project, received_at=now, profiled_at=now if profiled else None)
        sql(
            "INSERT INTO flywheel_prediction (project_id, external_id, model_version_id, label, confidence,"
            " least_confidence, margin, entropy, features, input, metadata, audit, batch_id, created_at, received_at)"
            " SELECT %s, 'h-' || g, %s, (g %% 10)::text, 0.9, 0.1, 0.2, 0.3,"
            f" jsonb_build_object({_FEATURES_SQL}), '{{}}', '{{}}', g %% 50 = 0, %s,"
            " %s - (%s + random() * %s) * interval '1 day', %s FROM generate_series(%s::int, %s::int) g",
            [project.pk, version.pk, batch.pk, now, days_from, days_to - days_from, now, start, end],
        )
        sql(
            "INSERT INTO flywheel_predictionkey (project_id, external_id, prediction_id, created_at)"
            " SELECT project_id, external_id, id, created_at FROM flywheel_prediction WHERE batch_id = %s"
            " AND created_at >= %s",
            [batch.pk, now - timedelta(days=days_to + 1)],
        )
        row = sql(
            "SELECT min(id), max(id), min(created_at), max(created_at) FROM flywheel_prediction"
            " WHERE batch_id = %s AND created_at >= %s",
            [batch.pk, now - timedelta(days=days_to + 1)],
        )[0]
        IngestBatch.objects.filter(pk=batch.pk).update(
            first_prediction_id=row[0], last_prediction_id=row[1], first_created_at=row[2], last_created_at=row[3]
        )
        print(f"  generated {end:,} predictions", flush=True)
    # As autovacuum does for an insert-only table (PostgreSQL 13 on): the visibility map
    # lets counts over the audit index skip the table.
    sql("VACUUM ANALYZE flywheel_prediction")
    sql("VACUUM ANALYZE flywheel_predictionkey")


def history_drop() -> int:
    """Drop the weekly partitions that end 14 days ago or earlier: the history's, all of it
    (created 21 days ago and before), none of the recent rows'; and their keys."""
    from django.utils import timezone

    from flywheel import partitions

    cutoff = timezone.now() - timedelta(days=14)
    names = [
        name
        for name in partitions.partitions_list()
        if name != partitions.DEFAULT_PARTITION
        and partitions.Week(datetime.strptime(name[-8:], "%Y%m%d").date()).upper <= cutoff
    ]
    for name in names:
        sql(f'DROP TABLE "{name}"')
    sql("DELETE FROM flywheel_predictionkey WHERE created_at < %s", [cutoff - timedelta(days=1)])
    sql("VACUUM ANALYZE flywheel_predictionkey")
    return len(names)


def setup(small: int):
    import numpy as np
    from django.utils import timezone

    from accounts.services import account_upsert
    from flywheel import partitions
    from flywheel.ingest import profiling
    from flywheel.models import ModelVersion
    from flywheel.projects import project_create
    from monitoring.services import Observations, reference_set_from_data

    now = timezone.now()
    partitions.prediction_partitions_ensure(now=now - timedelta(weeks=15), weeks_ahead=17)
    project = project_create(
        slug=SLUG,
        name="History",
        labels=[str(i) for i in range(10)],
        features=[{"name": n, "type": "numeric"} for n in FEATURES],
        routing_policy={"threshold": 0.3, "audit_rate": 0.02, "daily_budget": 10_000_000},
    )
    version = ModelVersion.objects.create(project=project, name="v1")
    generate(project, version, 1, small, days_from=0, days_to=14, profiled=False)
    sql(
        "INSERT INTO labeling_task (project_id, prediction_id, reason, priority, annotations_required, status,"
        " round, grouping_excluded, created_at, updated_at)"
        " SELECT project_id, id, 'low_confidence', random(), 1, 'open', 1, false, now(), now()"
        " FROM flywheel_prediction WHERE project_id = %s ORDER BY id LIMIT %s",
        [project.pk, OPEN_TASKS],
    )
    labels_add(project, LABELED)
    rng = np.random.default_rng(7)
    reference_set_from_data(
        project=project,
        note="bench",
        observations=Observations(
            label=[str(i % 10) for i in range(5000)],
            features={n: (rng.random(5000) * 4 - 2).round(6).tolist() for n in FEATURES},
        ),
    )
    profiling.profiles_update(project_id=project.pk, force_grids=True)
    app = account_upsert(username="history-app", role="app", projects=[project])[1]
    annotator = account_upsert(username="history-annotator", role="annotator", projects=[project])[1]
    ops = account_upsert(username="history-ops", role="ops", projects=[project])[1]
    return project, version, app, annotator, ops


def labels_add(project, n: int) -> None:
    """n more current labels, on the recent predictions that have none yet."""
    sql(
        "INSERT INTO labeling_label (project_id, prediction_id, label, source, weight, is_current, created_at)"
        " SELECT p.project_id, p.id, floor(random() * 10)::int::text, 'annotation', 1.0, true, now()"
        " FROM flywheel_prediction p WHERE p.project_id = %s AND p.external_id LIKE 'h-%%'"
        " AND p.created_at >= now() - interval '15 days'"
        " AND NOT EXISTS (SELECT 1 FROM labeling_label l WHERE l.prediction_id = p.id) ORDER BY p.id DESC LIMIT %s",
        [project.pk, n],
    )


def timed(fn, repeat: int) -> float:
    values = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        values.append(time.perf_counter() - started)
    return statistics.median(values)


def measure(project, app, annotator, ops, repeat: int, tag: str) -> dict:
    import numpy as np
    from rest_framework.test import APIClient

    from flywheel.datasets import services as datasets
    from flywheel.models import DatasetVersion
    from monitoring.services import drift_check_run

    def client(token):
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return c

    app_client, annotator_client, ops_client = client(app), client(annotator), client(ops)
    rng = np.random.default_rng(11)
    sent = [0]

    def ingest():
        items = [
            {
                "id": f"{tag}-{sent[0] + i}",
                "model_version": "v1",
                "label": str(i % 10),
                "confidence": float(c),
                "features": dict(zip(FEATURES, v.round(6).tolist(), strict=True)),
            }
            for i, (c, v) in enumerate(zip(rng.uniform(0.5, 0.99, 1000), rng.normal(size=(1000, 20)), strict=True))
        ]
        sent[0] += 1000
        response = app_client.post(f"/api/v1/projects/{SLUG}/predictions/", {"predictions": items}, format="json")
        assert response.status_code == 201, response.content[:300]

    def claim():
        assert annotator_client.post(f"/api/v1/projects/{SLUG}/tasks/next/").status_code == 200

    def stats():
        assert ops_client.get(f"/api/v1/projects/{SLUG}/stats/").status_code == 200

    def dataset():
        labels_add(project, LABELED // 100)
        version = datasets.dataset_version_create(project=project, note="bench")  # the task runs inline
        assert DatasetVersion.objects.get(pk=version.pk).status == "ready"

    ingest()  # warm: model version cache, prepared statements
    stats()
    figures = {
        "ingest_per_s": 1000 / timed(ingest, repeat * 2),
        "claim_ms": 1000 * timed(claim, repeat * 4),
        "stats_ms": 1000 * timed(stats, repeat),
        "drift_check_ms": 1000 * timed(lambda: drift_check_run(project=project), repeat),
        "dataset_version_s": timed(dataset, max(3, repeat // 2)),
    }
    print(f"  {tag}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", default="flywheel_bench_history")
    args = parser.parse_args()

    storage = tempfile.mkdtemp(prefix="flywheel-history-")
    env = bench_env(
        args.database,
        FLYWHEEL_STORAGE_ROOT=storage,
        FLYWHEEL_STORAGE_BACKEND="file",
        ALLOWED_HOSTS="testserver",
        DATABASE_POOL="false",
    )
    fresh_database(args.database)
    manage(env, "migrate", "--noinput", "-v", "0")
    os.environ.update(env)
    import django

    django.setup()
    from flywheel.models import Prediction

    started = time.perf_counter()
    project, version, app, annotator, ops = setup(args.small)
    print(f"set up {args.small:,} predictions in {time.perf_counter() - started:.0f} s", flush=True)
    small = measure(project, app, annotator, ops, args.repeat, "small")

    started = time.perf_counter()
    generate(project, version, args.small + 1, args.predictions, days_from=21, days_to=98, profiled=True)
    filled = time.perf_counter() - started
    stored = Prediction.objects.filter(project=project).count()
    print(f"history filled to {stored:,} predictions in {filled:.0f} s", flush=True)
    large = measure(project, app, annotator, ops, args.repeat, "large")
    # The machine's load moves between phases: drop the history's partitions (as retention
    # would) and measure the small size again, so the large one sits between two small ones.
    dropped = history_drop()
    print(f"dropped the {dropped} partitions of the history", flush=True)
    again = measure(project, app, annotator, ops, args.repeat, "again")
    first, small = small, {key: statistics.median([small[key], again[key]]) for key in small}

    print(
        f"\nhistory benchmark (medians; {args.small:,} (the median of before and after) and {stored:,} stored"
        " predictions, same project)"
    )
    for key in small:
        ratio = large[key] / small[key] if key != "ingest_per_s" else small[key] / large[key]
        verdict = "ok" if ratio <= 1.5 else "OVER"
        print(f"  {key:<18} {small[key]:>12,.2f} {large[key]:>12,.2f}   cost x{ratio:.2f}  (target <= 1.5) {verdict}")
    print(
        json.dumps(
            {"small_first": first, "small_again": again, "large": large, "stored": stored, "fill_seconds": filled}
        )
    )


if __name__ == "__main__":
    main()
