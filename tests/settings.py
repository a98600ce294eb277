"""Settings for the test suite: the real PostgreSQL and Redis of the machine, unless the
environment points elsewhere."""

import os
import uuid

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("DATABASE_URL", "postgres://flywheel@127.0.0.1:5432/flywheel")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")
# Tasks this test session sends to a real broker go to a queue of its own: the Celery
# workers the tests start consume it, and no other session's worker can take them.
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"test-{uuid.uuid4().hex[:8]}")
os.environ.setdefault("LOG_LEVEL", "WARNING")

from config.settings import *  # noqa: E402,F403

# Fast password hashing: the tests log in many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The workers the tests start also know the tests' own tasks (tests/tasks.py).
CELERY_IMPORTS = ["tests.tasks"]

# A beat a test starts with FLYWHEEL_TEST_BEAT_TICK set publishes only tests.record, that
# often (seconds), into that directory: a beat that publishes while its broker goes away.
if os.environ.get("FLYWHEEL_TEST_BEAT_TICK"):
    CELERY_BEAT_SCHEDULE = {"tests.tick": {
        "task": "tests.record", "schedule": float(os.environ["FLYWHEEL_TEST_BEAT_TICK"]),
        "args": [os.environ["FLYWHEEL_TEST_BEAT_DIRECTORY"]]}}
