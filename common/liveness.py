"""Liveness files: a long-running process (a Celery worker, the beat) touches its file while
it does its work, and a supervisor's health check fails when the file goes stale.

    python -m common.liveness PATH [--max-age SECONDS]

exits 0 when PATH was touched within the last SECONDS (default 60), 1 otherwise. Standard
library only, so a health check that runs every few seconds costs a few milliseconds."""

import argparse
import os
import sys
import time


def touch(path: str) -> None:
    """Mark the process alive now; a missing directory or a read-only disk is left to the check."""
    try:
        with open(path, "a"):
            os.utime(path)
    except OSError:
        pass


def age(path: str) -> float | None:
    """Seconds since the file was last touched, None when there is no file."""
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.liveness", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="The liveness file (FLYWHEEL_LIVENESS_FILE of the process checked).")
    parser.add_argument("--max-age", type=float, default=60.0, help="Seconds after which the file is stale.")
    args = parser.parse_args(argv)
    seconds = age(args.path)
    if seconds is None:
        print(f"unhealthy: {args.path} does not exist", file=sys.stderr)
        return 1
    if seconds > args.max_age:
        print(f"unhealthy: {args.path} last touched {seconds:.0f} s ago (limit {args.max_age:.0f} s)", file=sys.stderr)
        return 1
    print(f"healthy: {args.path} touched {seconds:.0f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
