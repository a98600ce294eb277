"""Every setting of the service, read from the environment (see .env.example)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env (written by `make run` on first start) fills what the environment leaves out.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Core -------------------------------------------------------------------------------

# No default: a deployment that forgets it must not run with a known key.
SECRET_KEY = env.str("SECRET_KEY")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "flywheel",
    "labeling",
    "monitoring",
    "sim",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "common.middleware.BodySizeLimitMiddleware",
    "common.middleware.NulInUrlMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.navigation",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------

# Embedded default: SQLite next to the code. The full stack and the tests use PostgreSQL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Under WSGI (the dev server, Celery) a worker keeps its connection: a new connection per
# request would cost more than the insert it serves. Under ASGI (gunicorn with uvicorn
# workers) Django asks for a connection pool instead of persistent connections.
DATABASE_POOL = env.bool("DATABASE_POOL", default=False)
DATABASES["default"]["CONN_MAX_AGE"] = 0 if DATABASE_POOL else env.int("DATABASE_CONN_MAX_AGE", default=60)
# No health-check query before each request: it would be one more round trip on every
# prediction. A connection that broke fails its request with 503 (clients retry) and is
# replaced at the end of that request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
if DATABASE_POOL and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=2),
        "max_size": env.int("DATABASE_POOL_MAX", default=10),
        "timeout": 10,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads of the dev server write at once. Each transaction takes the write lock
    # when it begins (a read that later wants to write could otherwise deadlock with another
    # writer and fail at once), waits up to 20 s for it, and readers do not block writers.
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;",
    })
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, aware of the partitioned predictions table (common/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "common.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, sessions, security -------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Cookies travel only over HTTPS unless DEBUG says this is a developer's machine.
SECURE_COOKIES = env.bool("SECURE_COOKIES", default=not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=12 * 3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The CSRF cookie stays readable by JavaScript (HttpOnly off, Django's default): the
# labeling workspace sends it back in X-CSRFToken with its session-authenticated API calls.
CSRF_COOKIE_SAMESITE = "Lax"
# Browsers heed HSTS only on HTTPS responses, and Django sends it only on requests it knows
# are secure, so it is on wherever the cookies are secure. No includeSubDomains: other
# services may share the domain.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if SECURE_COOKIES else 0)
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Web sign-in lockout: this many failed sign-ins for one username, or from one address,
# within the window refuse further sign-ins (even with the right password) until the
# failures age out of it. Counted in the database, which every worker shares. 0: no limit.
FLYWHEEL_LOGIN_MAX_FAILURES = env.int("FLYWHEEL_LOGIN_MAX_FAILURES", default=5)
FLYWHEEL_LOGIN_MAX_FAILURES_PER_IP = env.int("FLYWHEEL_LOGIN_MAX_FAILURES_PER_IP", default=30)
FLYWHEEL_LOGIN_LOCKOUT_SECONDS = env.int("FLYWHEEL_LOGIN_LOCKOUT_SECONDS", default=900)

# --- Static files ---------------------------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the app directories too, so `runserver` and tests need no collectstatic.
WHITENOISE_USE_FINDERS = True
# Files every web page shares (flywheel.css); each app keeps its own under <app>/static/.
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Internationalisation -------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- API ------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.FlywheelTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["common.json.FastJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["common.json.FastJSONRenderer"],
    "EXCEPTION_HANDLER": "common.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Flywheel API",
    "DESCRIPTION": "Prediction logging, routing, annotation, drift, datasets and retraining.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from our own static files: the docs work on a machine without internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "common.openapi.error_responses"],
}

# Requests larger than this are refused with 413 before their body is read.
FLYWHEEL_MAX_BODY_BYTES = env.int("FLYWHEEL_MAX_BODY_BYTES", default=32 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = FLYWHEEL_MAX_BODY_BYTES
FLYWHEEL_MAX_BATCH = env.int("FLYWHEEL_MAX_BATCH", default=10_000)
# Decoded size and pixel count an input image may have; larger ones are refused at ingestion.
FLYWHEEL_MAX_IMAGE_BYTES = env.int("FLYWHEEL_MAX_IMAGE_BYTES", default=5 * 1024 * 1024)
FLYWHEEL_MAX_IMAGE_PIXELS = env.int("FLYWHEEL_MAX_IMAGE_PIXELS", default=40_000_000)

# --- Celery -----------------------------------------------------------------------------------

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
# Embedded default: tasks run inline in the web process, so nothing else has to run.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker without the broker features Flywheel does not use, outliving any broker loss
# (config/celery.py), and a beat that tells a health check it is alive.
CELERY_WORKER_CONSUMER = "config.celery:Consumer"
CELERY_BEAT_SCHEDULER = "config.celery:BeatScheduler"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A redelivered task must not wait an hour: acks-late tasks return to the queue this soon
# after their worker vanishes.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    # Look for such tasks a few times per timeout (kombu's default looks every 100 s).
    "unacked_restore_interval": max(1, min(60, CELERY_VISIBILITY_TIMEOUT // 4)),
    "unacked_restore_throttle": 1,
    # The lock a worker takes while it restores such tasks. When Redis goes away during a
    # restore, the lock's release fails and a Redis that keeps its data brings the lock back
    # with it: kombu's default (300 s) then holds up every redelivery for five minutes. Half
    # the timeout is still far longer than a restore (milliseconds), and the restore itself
    # is a watched transaction, so two workers never hand one task back twice.
    "unacked_mutex_expire": max(2, min(300, CELERY_VISIBILITY_TIMEOUT // 2)),
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="flywheel")
# A worker (while connected to its broker or waiting for it) and the beat touch this file
# every FLYWHEEL_LIVENESS_SECONDS; `python -m common.liveness FILE --max-age N` is their
# health check. Empty: no file.
FLYWHEEL_LIVENESS_FILE = env.str("FLYWHEEL_LIVENESS_FILE", default="")
FLYWHEEL_LIVENESS_SECONDS = env.float("FLYWHEEL_LIVENESS_SECONDS", default=10.0)

# --- Storage (dataset versions, model artifacts) -------------------------------------------------

FLYWHEEL_STORAGE_BACKEND = env.str("FLYWHEEL_STORAGE_BACKEND", default="file")  # file | s3
FLYWHEEL_STORAGE_ROOT = env.path("FLYWHEEL_STORAGE_ROOT", default=BASE_DIR / "var" / "storage")
S3_BUCKET = env.str("S3_BUCKET", default="flywheel")
S3_PREFIX = env.str("S3_PREFIX", default="")
S3_ENDPOINT_URL = env.str("S3_ENDPOINT_URL", default="") or None
S3_REGION = env.str("S3_REGION", default="us-east-1")
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="") or None
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="") or None
# Attempts boto3 makes per S3 request before a build gives up on it (and Celery retries the build).
S3_MAX_ATTEMPTS = env.int("S3_MAX_ATTEMPTS", default=3)
# Recorded in every dataset manifest; empty: the git commit of the checkout, if there is one.
FLYWHEEL_CODE_VERSION = env.str("FLYWHEEL_CODE_VERSION", default="")

# --- Logging ------------------------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="console")  # console | json
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # A refused request (403, 404) is one warning line, not a traceback: it is the
    # client's doing, and tracebacks are kept for bugs.
    "filters": {"client_errors_without_traceback": {"()": "common.logging.ClientErrorsWithoutTraceback"}},
    "loggers": {"django.db.backends": {"level": "INFO"},
                "django.request": {"filters": ["client_errors_without_traceback"]}},
}

from common.logging import configure_structlog  # noqa: E402  (needs LOG_FORMAT above)

configure_structlog(json=LOG_FORMAT == "json", level=LOG_LEVEL)

# --- Metrics ------------------------------------------------------------------------------------

# When set, /metrics requires "Authorization: Bearer <METRICS_TOKEN>".
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Drift alerts ---------------------------------------------------------------------------------

# Webhooks go to https URLs at public addresses. Hosts listed here may also be reached over
# plain http and at private addresses (an alert relay inside the network).
FLYWHEEL_WEBHOOK_TRUSTED_HOSTS = env.list("FLYWHEEL_WEBHOOK_TRUSTED_HOSTS", default=[])
# Allow webhooks to loopback addresses (a receiver on the same machine: development, tests).
FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK = env.bool("FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK", default=False)

# Seconds a worker reuses a token's user and a project it looked up. Revoking a token or
# changing a project reaches the other workers within this time.
FLYWHEEL_ACCESS_CACHE_SECONDS = env.float("FLYWHEEL_ACCESS_CACHE_SECONDS", default=2.0)
# A key's last-used time is written at most this often (per key), off the request's path.
FLYWHEEL_TOKEN_LAST_USED_SECONDS = env.float("FLYWHEEL_TOKEN_LAST_USED_SECONDS", default=60.0)

# --- Labeling -----------------------------------------------------------------------------------

# Seconds a claimed task stays an annotator's without a heartbeat; the web page renews it
# while it is open, and a beat task returns expired ones to the queue.
FLYWHEEL_LEASE_SECONDS = env.int("FLYWHEEL_LEASE_SECONDS", default=600)

# --- Retraining -----------------------------------------------------------------------------------

# Trainer plug-ins by name, "name=dotted.path" separated by commas; a project's retraining
# policy names the one it uses.
FLYWHEEL_TRAINERS = {
    "sklearn": "flywheel.training.trainers.SklearnTrainer",
    "external": "flywheel.training.trainers.ExternalTrainer",
    **dict(item.split("=", 1) for item in env.list("FLYWHEEL_TRAINERS", default=[]) if "=" in item),
}
# A dataset build without a heartbeat this long (or queued and never started) is sent again.
FLYWHEEL_DATASET_STALE_SECONDS = env.int("FLYWHEEL_DATASET_STALE_SECONDS", default=300)
# A training stage whose heartbeat is older than this lost its worker and is run again.
FLYWHEEL_TRAINING_STALE_SECONDS = env.int("FLYWHEEL_TRAINING_STALE_SECONDS", default=300)
# A retention run whose heartbeat is older than this lost its worker and is taken over.
FLYWHEEL_RETENTION_STALE_SECONDS = env.int("FLYWHEEL_RETENTION_STALE_SECONDS", default=300)
# How often the beat looks at every project's retraining triggers.
FLYWHEEL_RETRAINING_CHECK_SECONDS = env.float("FLYWHEEL_RETRAINING_CHECK_SECONDS", default=300.0)
# Shadow mode: predictions a model in shadow scores per transaction, and how often the beat
# has shadows score new predictions and the live gate judge them.
FLYWHEEL_SHADOW_BATCH = env.int("FLYWHEEL_SHADOW_BATCH", default=2000)
FLYWHEEL_SHADOW_CHECK_SECONDS = env.float("FLYWHEEL_SHADOW_CHECK_SECONDS", default=60.0)


# Periodic work (Celery beat); every entry's task is safe to run twice and to miss a beat.
CELERY_BEAT_SCHEDULE = {
    "labeling.leases_sweep": {"task": "labeling.leases_sweep", "schedule": 60.0},
    # Group labeling: projects with labeling.grouping.enabled regroup their new open tasks.
    "labeling-groups": {"task": "flywheel.groups_build", "schedule": 300.0},
    # API keys that have expired go to the audit log (they are refused from their expiry on).
    "accounts.tokens_expired_record": {"task": "accounts.tokens_expired_record", "schedule": 300.0},
    # Dataset builds whose worker died are requeued (or failed after repeated losses).
    "flywheel.datasets.sweep_stale_builds": {"task": "flywheel.datasets.sweep_stale_builds", "schedule": 300.0},
    # Drift monitoring: profiles trail ingestion by a minute; each project is checked once per
    # its policy's interval (hourly by default); webhook retries follow their backoff.
    "drift-profiles": {"task": "flywheel.profiles_update", "schedule": 60.0},
    "drift-checks": {"task": "monitoring.drift_checks_run_due", "schedule": 300.0},
    "drift-webhook-retries": {"task": "monitoring.webhook_deliveries_retry", "schedule": 60.0},
    # Retraining: triggers (new labels, drift, schedule) and stages whose worker died.
    "training-triggers": {"task": "flywheel.training.triggers", "schedule": FLYWHEEL_RETRAINING_CHECK_SECONDS},
    "training-watchdog": {"task": "flywheel.training.watchdog", "schedule": 60.0},
    # Shadow mode: models in shadow score what was ingested since; the live gate judges them.
    # The prediction table's weekly partitions (PostgreSQL) are made weeks ahead of the data.
    "prediction-partitions": {"task": "flywheel.partitions_ensure", "schedule": 86400.0},
    "shadow-score": {"task": "flywheel.shadow.score", "schedule": FLYWHEEL_SHADOW_CHECK_SECONDS},
    "shadow-live-gate": {"task": "flywheel.shadow.live_gate", "schedule": FLYWHEEL_SHADOW_CHECK_SECONDS},
    # Retention: predictions past each project's raw_days are archived, then removed. Hourly,
    # though a project's run is daily: today's succeeded run makes the other beats no-ops,
    # and a failed one is tried again within the hour.
    "retention": {"task": "flywheel.retention.run", "schedule": 3600.0},
}
