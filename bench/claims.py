"""Queue benchmark: 32 concurrent annotators claim and annotate 5,000 tasks through the
HTTP API of the service (gunicorn, uvicorn workers, PostgreSQL), on this machine.

Prints claims per second, p50/p99 claim latency, and the double claims found (a task
held by two annotators at once), counted from the claims seen and from the database.
Targets: p99 claim latency under 25 ms, zero double claims.

    python bench/claims.py [--tasks 5000] [--annotators 32] [--think-ms 0] [--repeat 3]

--think-ms gives each annotator a pause per task (a person takes seconds); 0 runs flat out.
A person's pause varies: each one is drawn between half and one and a half times --think-ms,
and annotators start at random moments within the first pause. With the same pause for
everyone they would move in lockstep, all 32 claiming within the same millisecond every
round, which no team of people does.

Each annotator's first claim is reported apart: it is when a worker opens its database
connections and prepares its statements, once per worker, not what a claim costs.
"""

import os
import sys

# Run as `python bench/claims.py`, Python puts bench/ first on the path: put the repository
# there instead, so the project's packages import.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import orjson  # noqa: E402

from bench import loadgen  # noqa: E402
from bench.common import Gunicorn, bench_env, fresh_database, manage, median, percentile  # noqa: E402

DATABASE = "flywheel_bench_queue"


def setup(env, tasks: int, annotators: int) -> tuple[str, list[str]]:
    fresh_database(DATABASE)
    manage(env, "migrate", "--noinput", "-v", "0")
    code = (
        "from flywheel.projects import project_create\nfrom flywheel.ingest.services import predictions_ingest\n"
        "from flywheel.ingest.validation import PredictionInput\n"
        "p = project_create(slug='queue', name='Queue', labels=[str(i) for i in range(10)],"
        " features=[{'name': 'f0', 'type': 'numeric'}],"
        " routing_policy={'threshold': 0.0, 'audit_rate': 0.0, 'daily_budget': 10_000_000},"
        " labeling={'gold_rate': 0.0})\n"
        "import random\n"
        f"items = [PredictionInput(external_id=f'q-{{i}}', model_version='v1', label=str(i % 10),"
        f" confidence=random.random(), probabilities=None, features={{'f0': float(i)}}, input={{}}, metadata={{}},"
        f" created_at=None) for i in range({tasks})]\n"
        "for start in range(0, len(items), 1000):\n"
        "    predictions_ingest(project=p, items=items[start:start + 1000])\n"
    )
    manage(env, "shell", "-c", code)
    tokens = [manage(env, "flywheel_user", f"annotator-{i}", "--role", "annotator", "--project", "queue").strip()
              for i in range(annotators)]
    return "queue", tokens


async def annotator(port: int, token: str, think_s: float, claims: list, latencies: list, first: list,
                    stop_at: float, rng: random.Random):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    claims_made = 0
    if think_s:
        await asyncio.sleep(rng.uniform(0, think_s))
    claim = loadgen.render_post("/api/v1/projects/queue/tasks/next/", b"", token)
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        writer.write(claim)
        status, body, _ = await loadgen._read_response(reader)
        # An annotator's first claim is the service's warm-up (a worker opens its database
        # connections and prepares its statements on first use): kept apart, not hidden.
        (latencies if claims_made else first).append(time.perf_counter() - started)
        claims_made += 1
        if status == 204:
            break
        task = orjson.loads(body)["task"]
        claims.append((task["id"], token, started))
        if think_s:
            await asyncio.sleep(rng.uniform(0.5 * think_s, 1.5 * think_s))
        writer.write(loadgen.render_post(f"/api/v1/tasks/{task['id']}/annotations/",
                                         orjson.dumps({"label": task["prediction"]["label"]}), token))
        status, body, _ = await loadgen._read_response(reader)
        assert status == 201, body[:300]
    writer.close()


def run_once(port, tokens, think_s) -> dict:
    claims, latencies, first = [], [], []

    async def main():
        stop_at = time.perf_counter() + 600
        await asyncio.gather(*(annotator(port, t, think_s, claims, latencies, first, stop_at, random.Random(i))
                               for i, t in enumerate(tokens)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    per_task = Counter(task for task, _, _ in claims)
    return {"claims": len(claims), "rate": len(claims) / elapsed, "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "double_claims": sum(n - 1 for n in per_task.values()),
            "first_p50_ms": percentile(first, 50) * 1000, "first_max_ms": max(first) * 1000,
            "all_p99_ms": percentile(latencies + first, 99) * 1000}


def database_double_claims() -> tuple[int, int]:
    """Tasks with more than one annotation, and tasks not done, straight from PostgreSQL."""
    import psycopg

    with psycopg.connect(f"postgresql://flywheel@127.0.0.1:5432/{DATABASE}") as conn:
        doubles = conn.execute("SELECT count(*) FROM (SELECT task_id FROM labeling_annotation GROUP BY task_id "
                               "HAVING count(*) > 1) d").fetchone()[0]
        undone = conn.execute("SELECT count(*) FROM labeling_task WHERE status <> 'done'").fetchone()[0]
    return doubles, undone


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument("--annotators", type=int, default=32)
    parser.add_argument("--think-ms", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    env = bench_env(DATABASE)
    results = []
    for run in range(args.repeat):
        _, tokens = setup(env, args.tasks, args.annotators)
        with Gunicorn(env, workers=args.workers) as server:
            result = run_once(server.port, tokens, args.think_ms / 1000)
        result["db_doubles"], result["undone"] = database_double_claims()
        results.append(result)
        print(f"run {run + 1}: {result['claims']:,} claims, {result['rate']:,.0f}/s, p50 {result['p50_ms']:.1f} ms, "
              f"p99 {result['p99_ms']:.1f} ms (with first claims {result['all_p99_ms']:.1f} ms), "
              f"double claims {result['double_claims']} "
              f"(database: {result['db_doubles']}), tasks not done {result['undone']}", flush=True)

    print()
    print(f"queue benchmark ({args.repeat} runs, medians; {args.annotators} annotators, {args.tasks:,} tasks, "
          f"think time {args.think_ms:g} ms, gunicorn with {args.workers} uvicorn workers, {os.cpu_count()} cores)")
    print(f"  claims            {median([r['rate'] for r in results]):>10,.0f} per second")
    print(f"  claim p50         {median([r['p50_ms'] for r in results]):>10.2f} ms")
    print(f"  claim p99         {median([r['p99_ms'] for r in results]):>10.2f} ms   (target < 25 ms)")
    print(f"  first claims      {median([r['first_p50_ms'] for r in results]):>10.2f} ms p50, "
          f"{max(r['first_max_ms'] for r in results):.1f} ms at most (one per annotator, the warm-up: not above)")
    print(f"  p99 with them     {median([r['all_p99_ms'] for r in results]):>10.2f} ms")
    print(f"  double claims     {sum(r['double_claims'] + r['db_doubles'] for r in results):>10d}      (target 0)")
    print(f"  tasks left undone {sum(r['undone'] for r in results):>10d}")


if __name__ == "__main__":
    main()
