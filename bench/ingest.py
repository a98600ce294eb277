"""Ingestion benchmark: the web app under gunicorn on PostgreSQL, loaded from this machine.

Measures
  1. batch ingestion: predictions/s in batches of 1,000 (200,000 predictions, 20 numeric
     features, about 3% routed);
  2. single-prediction POSTs/s and p50/p99 latency at 16 concurrent clients;
  3. a raw PostgreSQL COPY of the same rows into a scratch table with the predictions
     table's columns, and the ratio of (1) to it.
Targets: (1) at least 25% of (3); single POST p50 under 10 ms.

    python bench/ingest.py [--predictions 200000] [--workers 4] [--repeat 3]

Only the single-POST phase (2), for the per-request cost of the API's fixed work (the key's
lookup and checks among it); with --access-cache-seconds 0 every request looks its key up:

    python bench/ingest.py --single-only --single-seconds 10 [--access-cache-seconds 0]
"""

import argparse
import io
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import loadgen  # noqa: E402
from bench.common import Gunicorn, bench_env, fresh_database, manage, median, percentile, request  # noqa: E402

DATABASE = "flywheel_bench_ingest"
FEATURES = [f"f{i}" for i in range(20)]


def make_predictions(n: int, seed: int, prefix: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES))).round(6)
    # About 3% below 0.7 confidence (routed at threshold 0.3), the rest confident.
    uncertain = rng.random(n) < 0.03
    confidence = np.where(uncertain, rng.uniform(0.3, 0.69, n), rng.uniform(0.71, 0.999, n)).round(4)
    labels = rng.integers(0, 10, n)
    return [
        {"id": f"{prefix}-{i}", "model_version": "v1", "label": str(labels[i]), "confidence": float(confidence[i]),
         "features": dict(zip(FEATURES, values[i].tolist(), strict=True))}
        for i in range(n)
    ]


def setup(env, database: str) -> str:
    fresh_database(database)
    manage(env, "migrate", "--noinput", "-v", "0")
    code = (
        "from flywheel.projects import project_create;"
        f"project_create(slug='bench', name='Bench', labels=[str(i) for i in range(10)],"
        f" features=[{{'name': n, 'type': 'numeric'}} for n in {FEATURES!r}],"
        " routing_policy={'threshold': 0.3, 'audit_rate': 0.0, 'daily_budget': 10_000_000})"
    )
    manage(env, "shell", "-c", code)
    return manage(env, "flywheel_user", "bench-app", "--role", "app", "--project", "bench").strip()


def batch_phase(port, token, predictions, batch_size, clients) -> dict:
    bodies = [orjson.dumps({"predictions": predictions[i:i + batch_size]})
              for i in range(0, len(predictions), batch_size)]
    routed = [0]
    lock = threading.Lock()

    def send(body):
        status, data = request("POST", port, "/api/v1/projects/bench/predictions/", body, token)
        assert status == 201, data[:300]
        result = orjson.loads(data)
        with lock:
            routed[0] += sum(r["routed"] for r in result["results"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, bodies))
    elapsed = time.perf_counter() - started
    return {"rate": len(predictions) / elapsed, "seconds": elapsed, "routed_share": routed[0] / len(predictions)}


def single_phase(port, token, predictions, clients, seconds) -> dict:
    """Closed loop: each client sends its next prediction when the last answer arrives."""
    requests = iter([loadgen.render_post("/api/v1/projects/bench/predictions/", orjson.dumps(p), token)
                     for p in predictions])
    outcome = loadgen.run(port, lambda: next(requests, None), clients=clients, seconds=seconds)
    latencies = outcome["latencies"]
    assert set(outcome["statuses"]) == {201}, outcome["statuses"]
    return {"rate": len(latencies) / outcome["seconds"], "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "requests": len(latencies)}


def copy_phase(predictions, database: str) -> dict:
    """COPY the same rows, already rendered as COPY text, into a scratch table with the
    predictions table's columns and defaults (no indexes): PostgreSQL's own ceiling."""
    import psycopg

    now = datetime.now(UTC).isoformat()
    lines = io.StringIO()
    for p in predictions:
        features = orjson.dumps(p["features"]).decode()
        lines.write(f"1\t1\tc-{p['id']}\t1\t{p['label']}\t{p['confidence']}\t\\N\t{1 - p['confidence']}\t"
                    f"0.5\t0.5\t{features}\t{{}}\t{{}}\tf\t{now}\t{now}\n")
    payload = lines.getvalue().encode()
    columns = ("project_id, batch_id, external_id, model_version_id, label, confidence, probabilities, "
               "least_confidence, margin, entropy, features, input, metadata, audit, created_at, received_at")
    with psycopg.connect(f"postgresql://flywheel@127.0.0.1:5432/{database}", autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (LIKE flywheel_prediction INCLUDING DEFAULTS INCLUDING IDENTITY)")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor().copy(f"COPY bench_copy ({columns}) FROM STDIN") as copy:
            for start in range(0, len(payload), 1 << 20):
                copy.write(payload[start:start + (1 << 20)])
        elapsed = time.perf_counter() - started
        count = conn.execute("SELECT count(*) FROM bench_copy").fetchone()[0]
        conn.execute("DROP TABLE bench_copy")
    assert count == len(predictions)
    return {"rate": len(predictions) / elapsed, "seconds": elapsed}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--single-clients", type=int, default=16)
    parser.add_argument("--single-seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each phase; medians are reported.")
    parser.add_argument("--single-only", action="store_true", help="Only the single-POST phase.")
    parser.add_argument("--access-cache-seconds", type=float, default=None,
                        help="FLYWHEEL_ACCESS_CACHE_SECONDS of the server (0: every request looks its key up).")
    parser.add_argument("--database", default=DATABASE,
                        help="Scratch database (dropped and made anew), so two checkouts can run it at once.")
    args = parser.parse_args()

    extra = {} if args.access_cache_seconds is None else {"FLYWHEEL_ACCESS_CACHE_SECONDS": args.access_cache_seconds}
    env = bench_env(args.database, **extra)
    token = setup(env, args.database)
    if args.single_only:
        return single_only(env, token, args)
    batches, singles, copies = [], [], []
    with Gunicorn(env, workers=args.workers) as server:
        for run in range(args.repeat):
            predictions = make_predictions(args.predictions, seed=run, prefix=f"b{run}")
            batches.append(batch_phase(server.port, token, predictions, args.batch_size, args.batch_clients))
            copies.append(copy_phase(predictions, args.database))
            singles.append(single_phase(server.port, token, make_predictions(100_000, seed=100 + run,
                                                                            prefix=f"s{run}"),
                                        args.single_clients, args.single_seconds))
            print(f"run {run + 1}: batch {batches[-1]['rate']:,.0f}/s, COPY {copies[-1]['rate']:,.0f}/s, "
                  f"single {singles[-1]['rate']:,.0f}/s p50 {singles[-1]['p50_ms']:.1f} ms "
                  f"p99 {singles[-1]['p99_ms']:.1f} ms", flush=True)

    batch_rate = median([b["rate"] for b in batches])
    copy_rate = median([c["rate"] for c in copies])
    # Each run's batch rate against the COPY of the same rows, measured minutes apart.
    ratio = median([b["rate"] / c["rate"] for b, c in zip(batches, copies, strict=True)])
    print()
    print(f"ingestion benchmark ({args.repeat} runs, medians; gunicorn with {args.workers} uvicorn workers, "
          f"{os.cpu_count()} cores, load generator on the same machine)")
    print(f"  batch ingestion   {batch_rate:>10,.0f} predictions/s  ({args.predictions:,} in batches of "
          f"{args.batch_size:,}, {args.batch_clients} clients, "
          f"{median([b['routed_share'] for b in batches]):.1%} routed)")
    print(f"  raw COPY          {copy_rate:>10,.0f} rows/s")
    print(f"  batch / COPY      {ratio:>10.1%}   (target >= 25%)")
    print(f"  single POST       {median([s['rate'] for s in singles]):>10,.0f} requests/s at "
          f"{args.single_clients} clients")
    print(f"  single p50        {median([s['p50_ms'] for s in singles]):>10.2f} ms   (target < 10 ms)")
    print(f"  single p99        {median([s['p99_ms'] for s in singles]):>10.2f} ms")


def single_only(env, token, args) -> None:
    singles = []
    with Gunicorn(env, workers=args.workers) as server:
        for run in range(args.repeat):
            singles.append(single_phase(server.port, token, make_predictions(100_000, seed=100 + run, prefix=f"s{run}"),
                                        args.single_clients, args.single_seconds))
            print(f"run {run + 1}: single {singles[-1]['rate']:,.0f}/s p50 {singles[-1]['p50_ms']:.2f} ms "
                  f"p99 {singles[-1]['p99_ms']:.2f} ms", flush=True)
    print()
    print(f"single POSTs ({args.repeat} runs of {args.single_seconds:g} s, medians; {args.workers} uvicorn workers, "
          f"{args.single_clients} clients, access cache {env.get('FLYWHEEL_ACCESS_CACHE_SECONDS', 'default')} s)")
    print(f"  single POST       {median([s['rate'] for s in singles]):>10,.0f} requests/s")
    print(f"  single p50        {median([s['p50_ms'] for s in singles]):>10.2f} ms")
    print(f"  single p99        {median([s['p99_ms'] for s in singles]):>10.2f} ms")


if __name__ == "__main__":
    main()
