"""Settings for Photobooth, read from the environment (contract section 1).

Every variable is optional: with none set, one process runs everything on one machine (SQLite,
the in-memory channel layer, the built-in mockup API). A malformed value stops start-up with
ImproperlyConfigured instead of being guessed at.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime state of the embedded default (database, media, generated secret key); gitignored.
VAR_DIR = Path(os.environ.get("PHOTOBOOTH_VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    """Return the boolean environment variable `name`, refusing anything ambiguous."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    """Return the integer environment variable `name`, at least `minimum`."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below its minimum of {minimum}.")
    return value


def env_float(
    name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
) -> float:
    """Return the number in environment variable `name`, within [minimum, maximum]."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if not minimum <= value <= (maximum if maximum is not None else float("inf")):
        raise ImproperlyConfigured(f"{name}={value} is outside [{minimum}, {maximum}].")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """Return the comma-separated environment variable `name` as a list of non-empty items."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, schemes: set[str]) -> str | None:
    """Return the URL in `name` (or None), refusing one without a host or with another scheme."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        expected = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name}={raw!r} is not a URL with scheme {expected}.")
    return raw


def _secret_key() -> str:
    """Return SECRET_KEY, or a random key kept in VAR_DIR so sessions survive restarts."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
PUBLIC_BASE_URL = (env_url("PUBLIC_BASE_URL", {"http", "https"}) or "http://127.0.0.1:8000").rstrip(
    "/"
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "sessions_app",
    "jobs_app",
    "mockup_api",
    "pages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "photobooth.urls"
ASGI_APPLICATION = "photobooth.asgi.application"
APPEND_SLASH = False

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# SQLite: Django's backend plus one writer lock per process (photobooth/sqlite_writer/base.py).
SQLITE_OPTIONS = {
    # Writers take the lock when their transaction starts, so two writers never deadlock on
    # a lock upgrade; readers are never blocked thanks to WAL.
    "transaction_mode": "IMMEDIATE",
    # How long a writer waits for its turn, on the process's lock and then in SQLite's busy
    # handler (other processes), before "database is locked". Writes take milliseconds, so
    # a wait this long means a stuck or overloaded writer; the queue retries what failed.
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
}
_database_url = os.environ.get("DATABASE_URL", "").strip()
if _database_url:
    try:
        DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=0)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not usable: {exc}") from None
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        # A sqlite:// URL gets what the default gets: IMMEDIATE transactions and the lock.
        DATABASES["default"]["ENGINE"] = "photobooth.sqlite_writer"
        given = DATABASES["default"].get("OPTIONS", {})
        DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **given}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # A pool instead of a new connection per request: under ASGI every request runs in a
        # thread of its own, where persistent connections would pile up.
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env_int("DATABASE_POOL_MAX", 20, minimum=2),
            "timeout": 10,
        }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "photobooth.sqlite_writer",
            "NAME": VAR_DIR / "photobooth.sqlite3",
            "OPTIONS": SQLITE_OPTIONS,
            # A file (threads in tests share it), one per process so parallel runs never clash.
            "TEST": {"NAME": VAR_DIR / f"test-{os.getpid()}.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer --------------------------------------------------------------------------


# Messages a channel may hold; every stream of a process reads one channel (jobs_app/stream_hub.py).
CHANNEL_CAPACITY = env_int("CHANNEL_CAPACITY", 1000, minimum=10)


def in_memory_channel_layer() -> dict:
    """Return the in-memory layer settings (one process: the embedded default, tests)."""
    # Channels' in-memory layer plus one batched send for an event's groups.
    return {
        "BACKEND": "jobs_app.channel_layer.InMemoryChannelLayer",
        "CONFIG": {"capacity": CHANNEL_CAPACITY},
    }


def redis_channel_layer(url: str, prefix: str = "photobooth") -> dict:
    """Return the channels-redis layer settings for a Redis URL (see docs/streams.md)."""
    return {
        # channels-redis' layer plus one batched send for an event's groups.
        "BACKEND": "jobs_app.channel_layer.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 reads with a 5 s socket timeout by default, exactly as long as
            # channels-redis blocks in BZPOPMIN, so idle consumers crashed every ~5 s
            # (django/channels_redis#422). Longer than the block, still finite.
            # redis-py 8 also fails fast past 100 pooled connections; heartbeats of many streams
            # at once need more.
            "hosts": [{"address": url, "socket_timeout": 15, "max_connections": 2000}],
            "prefix": prefix,
            "capacity": CHANNEL_CAPACITY,
            "expiry": 60,
            # Longer than the longest stream (STREAM_MAX_SECONDS) so membership never
            # lapses while a stream is open.
            "group_expiry": 2 * env_int("STREAM_MAX_SECONDS", 1800, minimum=10),
        },
    }


REDIS_URL = env_url("REDIS_URL", {"redis", "rediss", "unix"})
if REDIS_URL:
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}
    # Shared by every process: the leader refreshes the catalog, web processes read it.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "photobooth",
        }
    }
else:
    CHANNEL_LAYERS = {"default": in_memory_channel_layer()}

# --- Auth, sessions, CSRF -------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 30 * 24 * 3600
CSRF_COOKIE_NAME = "csrftoken"
CSRF_FAILURE_VIEW = "photobooth.errors.csrf_failure"
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Bearer tokens for non-browser clients; a booth session lives as long as its newest token.
BOOTH_TOKEN_TTL_SECONDS = env_int("BOOTH_TOKEN_TTL_SECONDS", 30 * 24 * 3600, minimum=60)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Files ----------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or VAR_DIR / "media")
# Uploaded photos and results are served by our own views (signed / capability URLs), never
# by a directory listing, so there is no MEDIA_URL route.
MEDIA_URL = "/media/"
UPLOAD_MAX_BYTES = 15 * 1024 * 1024
UPLOAD_MAX_PIXELS = 40_000_000
# Multipart overhead allowed on top of UPLOAD_MAX_BYTES before the ASGI guard cuts a request.
REQUEST_BODY_MAX_BYTES = UPLOAD_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "jobs_app.uploads.LimitedUploadHandler",  # counts and refuses; passes bytes on
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024


# --- Upstream and webhooks ------------------------------------------------------------------
def _derived_secret(purpose: str) -> bytes:
    """Return a secret derived from SECRET_KEY, for the built-in API when none is configured."""
    return hmac.new(SECRET_KEY.encode(), f"photobooth:{purpose}".encode(), hashlib.sha256).digest()


# Unset: the built-in mockup API, mounted at /mockup-api/ of this server.
MOCKUP_API_URL = env_url("MOCKUP_API_URL", {"http", "https"})
MOCKUP_API_KEY = os.environ.get("MOCKUP_API_KEY") or _derived_secret("mockup-api-key").hex()
MOCKUP_API_APP_ID = os.environ.get("MOCKUP_API_APP_ID", "photobooth")
WEBHOOK_SECRETS = env_list(
    "WEBHOOK_SECRETS",
    ["whsec_" + base64.b64encode(_derived_secret("webhook-secret")).decode()],
)
for _secret in WEBHOOK_SECRETS:
    if not _secret.startswith("whsec_"):
        raise ImproperlyConfigured("Every WEBHOOK_SECRETS entry must start with 'whsec_'.")
    try:
        base64.b64decode(_secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise ImproperlyConfigured("A WEBHOOK_SECRETS entry is not whsec_<base64>.") from None
# Where the upstream sends its webhooks (the built-in API reads it; a remote one is told).
MOCKUP_API_WEBHOOK_URL = f"{PUBLIC_BASE_URL}/webhooks/mockup-api"

# Fault knobs of the built-in mockup API (mockup_api/), for tests, demos and benchmarks.
MOCKUP_API_STEP_SECONDS = env_float("MOCKUP_API_STEP_SECONDS", 0.25)  # render time per step
MOCKUP_API_STEPS = env_int("MOCKUP_API_STEPS", 6, minimum=1)  # progress steps per job
MOCKUP_API_FAILURE_RATE = env_float("MOCKUP_API_FAILURE_RATE", 0.0, maximum=1.0)  # per job
MOCKUP_API_DUPLICATE_WEBHOOK_RATE = env_float("MOCKUP_API_DUPLICATE_WEBHOOK_RATE", 0.0, maximum=1.0)
MOCKUP_API_REORDER_WEBHOOKS = env_bool("MOCKUP_API_REORDER_WEBHOOKS", False)
MOCKUP_API_SOCKET_DROP_RATE = env_float("MOCKUP_API_SOCKET_DROP_RATE", 0.0, maximum=1.0)
MOCKUP_API_RATE_LIMIT = env_int("MOCKUP_API_RATE_LIMIT", 120, minimum=1)  # requests per window
MOCKUP_API_RATE_WINDOW_SECONDS = env_int("MOCKUP_API_RATE_WINDOW_SECONDS", 60, minimum=1)
MOCKUP_API_WORKERS = env_int("MOCKUP_API_WORKERS", 2, minimum=1)  # jobs at once, render processes
MOCKUP_API_RESULT_TTL_SECONDS = 24 * 3600

# --- Tasks, events and streams (contract section 7) -----------------------------------------
TASK_IDEMPOTENCY_SECONDS = 24 * 3600
# A task not finished this long after creation is cancelled with reason `timeout`.
TASK_DEADLINE_SECONDS = env_int("TASK_DEADLINE_SECONDS", 600, minimum=10)
# Workers (jobs_app.leases): a worker renews its lease every WORKER_RENEW_SECONDS; its tasks
# are taken over once the lease has run out, so a dead worker's tasks move on within about
# WORKER_LEASE_SECONDS + WORKER_RENEW_SECONDS (25 s by default; the contract promises 30 s).
WORKER_LEASE_SECONDS = env_int("WORKER_LEASE_SECONDS", 20, minimum=2)
WORKER_RENEW_SECONDS = env_int("WORKER_RENEW_SECONDS", 5, minimum=1)
# Threads (each with a database connection) a worker writes through; keep it below
# DATABASE_POOL_MAX. 0: asgiref's one shared thread (in-process tests).
WORKER_DB_THREADS = env_int("WORKER_DB_THREADS", 4, minimum=0)
# Threads the streams read the event log through (replays, refills, heartbeat checks), apart
# from everything else so a slow write never delays a delivery. Each keeps a connection:
# WORKER_DB_THREADS + STREAM_DB_THREADS + busy requests must stay below DATABASE_POOL_MAX.
STREAM_DB_THREADS = env_int("STREAM_DB_THREADS", 4, minimum=0)
if WORKER_LEASE_SECONDS < 2 * WORKER_RENEW_SECONDS:
    # One late renewal must not lose a live worker's claims.
    raise ImproperlyConfigured(
        f"WORKER_LEASE_SECONDS={WORKER_LEASE_SECONDS} must be at least twice "
        f"WORKER_RENEW_SECONDS={WORKER_RENEW_SECONDS}."
    )
STREAM_HEARTBEAT_SECONDS = env_int("STREAM_HEARTBEAT_SECONDS", 15, minimum=1)
STREAM_MAX_SECONDS = env_int("STREAM_MAX_SECONDS", 1800, minimum=10)
STREAM_MAX_PER_SESSION = env_int("STREAM_MAX_PER_SESSION", 20, minimum=1)
STREAM_QUEUE_MAX = env_int("STREAM_QUEUE_MAX", 1000, minimum=10)
WEBHOOK_TOLERANCE_SECONDS = env_int("WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1)
EVENT_RETENTION_HOURS = env_int("EVENT_RETENTION_HOURS", 24, minimum=24)
EVENT_RETENTION_MAX = env_int("EVENT_RETENTION_MAX", 10_000, minimum=10_000)
EVENT_POLL_MAX_WAIT_SECONDS = 25
STATS_TOKEN = os.environ.get("STATS_TOKEN") or None
# Redis keys of the shared stream registry (with REDIS_URL); one prefix per deployment.
STREAM_REGISTRY_PREFIX = os.environ.get("STREAM_REGISTRY_PREFIX") or "photobooth:streams"
# The `process` label of /metrics; unset: host:pid. Set a stable name per unit (web-8001).
METRICS_PROCESS_NAME = os.environ.get("METRICS_PROCESS_NAME") or None

# --- REST framework and OpenAPI -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "sessions_app.authentication.BearerTokenAuthentication",
        "sessions_app.authentication.BoothCookieAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["sessions_app.authentication.HasBoothSession"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "photobooth.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Photobooth API",
    "DESCRIPTION": "Sessions, uploads, tasks and events of the Photobooth backend "
    "(see docs/api.md and the public contract).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Misc -----------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # One line per upstream HTTP call is noise at INFO; failures are logged by our code.
    "loggers": {"httpx": {"level": "WARNING"}},
}
