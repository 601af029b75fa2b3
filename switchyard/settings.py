"""Switchyard settings: one module, driven by environment variables (see README)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from switchyard.env import env_bool, env_database, env_decimal, env_int, env_list, env_redis_url, env_str
from switchyard.logging import logging_config
from switchyard.sso import social_providers

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SWITCHYARD_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DATABASE_URL = env_str("DATABASE_URL", "")
REDIS_URL = env_redis_url("REDIS_URL")
# Embedded mode: one machine, zero services. Full mode: PostgreSQL + Redis + Celery workers.
EMBEDDED = not REDIS_URL
TESTING = "pytest" in sys.modules or env_bool("SWITCHYARD_TESTING", False)

# LOCAL: the zero-services default (neither DATABASE_URL nor REDIS_URL), meant for one machine on
# http://127.0.0.1: no SSL redirect or Secure-only cookies, static files without collectstatic.
LOCAL = not DATABASE_URL and not REDIS_URL
# Off unless asked for, in every mode: signed-up users must never see Django's technical error pages.
DEBUG = env_bool("DEBUG", False)


def _persisted_secret(path: Path) -> str:
    """A random secret created once under var/ (owner-only) and read back on every later start, so
    sessions and the provider keys encrypted with it survive restarts. Several processes may start at
    once: the file is written aside and linked into place, and whoever links first wins."""
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # created 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(50) + "\n")
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    value = path.read_text().strip()
    if len(value) < 50:
        raise ImproperlyConfigured(f"{path} does not hold a usable secret key; delete it or set SECRET_KEY.")
    return value


SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not (LOCAL or DEBUG):
        raise ImproperlyConfigured(
            'SECRET_KEY is required with DATABASE_URL or REDIS_URL set: export SECRET_KEY="$(python3 -c '
            "'import secrets; print(secrets.token_urlsafe(50))')\" (or DEBUG=1 for development)."
        )
    SECRET_KEY = _persisted_secret(VAR_DIR / "secret_key")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "axes",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "routing",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "switchyard.staticfiles.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "switchyard.errors.ApiErrorMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into its 429 page
]

ROOT_URLCONF = "switchyard.urls"
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
WSGI_APPLICATION = "switchyard.wsgi.application"
ASGI_APPLICATION = "switchyard.asgi.application"

# Every SQLite database, the default file or one a DATABASE_URL names: WAL lets readers go on while a
# writer (the usage writer, a hold) commits; IMMEDIATE takes the write lock when a transaction starts,
# so two writers queue on the busy timeout instead of one failing at once with "database is locked"
# (a deferred transaction cannot wait to upgrade its read lock); 20 s of waiting outlasts any burst.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
# env_database refuses schemes other than PostgreSQL and SQLite, and a malformed URL, by name.
_database = env_database("DATABASE_URL", conn_max_age=60, conn_health_checks=True)
if _database:
    DATABASES = {"default": _database}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
    else:
        # Behind PgBouncer in transaction mode (docs/operations/scaling.md).
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool(
            "DATABASE_DISABLE_SERVER_SIDE_CURSORS", False
        )
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "switchyard.sqlite3"),
            "OPTIONS": dict(SQLITE_OPTIONS),
            # A file, not :memory:, so the test suite's server threads and subprocesses share it.
            # Per test run, so two runs on one machine never share (and delete) each other's database.
            "TEST": {"NAME": env_str("SWITCHYARD_TEST_DB", str(VAR_DIR / f"test-{os.getpid()}.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out admin login before any check
    "django.contrib.auth.backends.ModelBackend",  # Django admin
    "allauth.account.auth_backends.AuthenticationBackend",  # the dashboard: email login
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/dashboard/"

# Dashboard accounts (django-allauth): email is the login, verified before the first sign-in.
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True  # the link opened in the signing-up browser signs in
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_CHANGE_EMAIL = True
ACCOUNT_LOGOUT_REDIRECT_URL = "/"
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Switchyard] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG or LOCAL else "https"

# Email: SMTP when EMAIL_HOST is set; otherwise each message is a file under var/emails/ (embedded mode,
# and the browser tests read the verification link from there).
EMAIL_HOST = env_str("EMAIL_HOST", "")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Switchyard <noreply@switchyard.local>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "emails")

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Production serves the hashed, compressed copies `collectstatic` made (the Dockerfile runs it with
# SWITCHYARD_STATIC_MANIFEST=1); `make run`, development and tests serve static/ as it is.
SWITCHYARD_STATIC_MANIFEST = env_bool("SWITCHYARD_STATIC_MANIFEST", not (DEBUG or TESTING or LOCAL))
WHITENOISE_USE_FINDERS = not SWITCHYARD_STATIC_MANIFEST
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if SWITCHYARD_STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["switchyard.renderers.ORJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "switchyard.errors.drf_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchyard API",
    "DESCRIPTION": "One API, every model: OpenAI- and OpenRouter-compatible LLM routing.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # The raw-ASGI gateway's routes (not DRF views), documented from their wire-format serializers.
    "PREPROCESSING_HOOKS": ["routing.openapi.add_gateway_operations"],
    # `message`: both the Anthropic response's `type` and an OpenAI-style SSE event's name.
    "ENUM_NAME_OVERRIDES": {"MessageEnum": ["message"]},
}

# Celery: eager in embedded mode (no broker), Redis in full mode.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "") or REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = EMBEDDED
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# The beat schedule is built in switchyard/celery.py from the SWITCHYARD_*_SECONDS settings below.

# Encryption for stored provider keys (BYOK): first key encrypts, all decrypt.
_enc = env_list("SWITCHYARD_ENCRYPTION_KEYS", [])
if not _enc:
    # Embedded mode derives them from its persisted secret key; full mode must set its own (a key
    # rotation then never depends on SECRET_KEY).
    if not (LOCAL or DEBUG):
        raise ImproperlyConfigured(
            "SWITCHYARD_ENCRYPTION_KEYS is required with DATABASE_URL or REDIS_URL set: export "
            "SWITCHYARD_ENCRYPTION_KEYS=\"$(.venv/bin/python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')\" (keep it: it decrypts the stored provider keys)."
        )
    _enc = [base64.urlsafe_b64encode(hashlib.sha256(("enc:" + SECRET_KEY).encode()).digest()).decode()]
SWITCHYARD_ENCRYPTION_KEYS = _enc
# BYOK: requests served with an organisation's own provider key are charged this percent of the list
# cost (rounded up to a whole picodollar); a process trusts its cached copy of an org's keys this long.
SWITCHYARD_BYOK_FEE_PERCENT = env_decimal("SWITCHYARD_BYOK_FEE_PERCENT", "5")
if not 0 <= SWITCHYARD_BYOK_FEE_PERCENT <= 100:
    raise ImproperlyConfigured("SWITCHYARD_BYOK_FEE_PERCENT must be between 0 and 100.")
SWITCHYARD_BYOK_CACHE_SECONDS = env_int("SWITCHYARD_BYOK_CACHE_SECONDS", 2)
# Models whose every endpoint lacks its platform key (`api_key_env` unset) are listed as unavailable;
# on, /models and the model browser leave them out (organisations' own keys still reach them).
SWITCHYARD_HIDE_UNAVAILABLE_MODELS = env_bool("SWITCHYARD_HIDE_UNAVAILABLE_MODELS", False)

# Credits every new organisation starts with (USD, a ledger grant; 0 = none), and who to ask for more
# when purchases are off (no STRIPE_API_KEY): an email address or URL shown to organisation owners.
SWITCHYARD_STARTER_CREDITS = str(env_decimal("SWITCHYARD_STARTER_CREDITS", "0"))
SWITCHYARD_OPERATOR_CONTACT = env_str("SWITCHYARD_OPERATOR_CONTACT", "")

STRIPE_API_KEY = env_str("STRIPE_API_KEY", "")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "")
# Billing (README "Billing"): purchase bounds and the card fee shown before paying, webhook clock
# tolerance, auto top-up failure policy, auditor cadence.
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300)
SWITCHYARD_PURCHASE_MIN_USD = env_decimal("SWITCHYARD_PURCHASE_MIN_USD", "5")
SWITCHYARD_PURCHASE_MAX_USD = env_decimal("SWITCHYARD_PURCHASE_MAX_USD", "10000")
SWITCHYARD_PURCHASE_FEE_PERCENT = env_decimal("SWITCHYARD_PURCHASE_FEE_PERCENT", "5.5")
SWITCHYARD_PURCHASE_FEE_MIN_USD = env_decimal("SWITCHYARD_PURCHASE_FEE_MIN_USD", "0.80")
SWITCHYARD_AUTO_TOPUP_MAX_FAILURES = env_int("SWITCHYARD_AUTO_TOPUP_MAX_FAILURES", 3)
SWITCHYARD_AUTO_TOPUP_RETRY_SECONDS = env_int("SWITCHYARD_AUTO_TOPUP_RETRY_SECONDS", 3600)
SWITCHYARD_AUDIT_INTERVAL_SECONDS = env_int("SWITCHYARD_AUDIT_INTERVAL_SECONDS", 300)
SWITCHYARD_HOLDS_REAP_SECONDS = env_int("SWITCHYARD_HOLDS_REAP_SECONDS", 30)
# How often beat has the usage stream drained into the ledger (seconds; a decimal, 0.05 to 60).
SWITCHYARD_USAGE_DRAIN_SECONDS = float(env_decimal("SWITCHYARD_USAGE_DRAIN_SECONDS", "1"))
if not 0.05 <= SWITCHYARD_USAGE_DRAIN_SECONDS <= 60:
    raise ImproperlyConfigured("SWITCHYARD_USAGE_DRAIN_SECONDS must be between 0.05 and 60 seconds.")

# Hot path knobs.
SWITCHYARD_KEY_CACHE_SECONDS = env_int("SWITCHYARD_KEY_CACHE_SECONDS", 2)
SWITCHYARD_CATALOG_CHECK_SECONDS = env_int("SWITCHYARD_CATALOG_CHECK_SECONDS", 1)
SWITCHYARD_MAX_BODY_BYTES = env_int("SWITCHYARD_MAX_BODY_BYTES", 4 * 1024 * 1024)
# The same limit for Django's own views (the Stripe webhook, admin, dashboard): over it, 413 under /api/.
DATA_UPLOAD_MAX_MEMORY_SIZE = SWITCHYARD_MAX_BODY_BYTES
# Input limits on the completion endpoints (routing/gateway/input_limits.py): each a 400 naming the field.
SWITCHYARD_MAX_JSON_DEPTH = env_int("SWITCHYARD_MAX_JSON_DEPTH", 64)
SWITCHYARD_MAX_MESSAGES = env_int("SWITCHYARD_MAX_MESSAGES", 2000)
SWITCHYARD_MAX_STRING_CHARS = env_int("SWITCHYARD_MAX_STRING_CHARS", 1024 * 1024)
SWITCHYARD_MAX_OUTPUT_TOKENS = env_int("SWITCHYARD_MAX_OUTPUT_TOKENS", 1_000_000)
# Rate limits (routing/ratelimit.py). Paid traffic: defaults for every key / organisation, overridable
# on each in admin; 0 = no limit. Free models: per organisation.
SWITCHYARD_RATE_LIMIT_KEY_RPM = env_int("SWITCHYARD_RATE_LIMIT_KEY_RPM", 0)
SWITCHYARD_RATE_LIMIT_KEY_TPM = env_int("SWITCHYARD_RATE_LIMIT_KEY_TPM", 0)
SWITCHYARD_RATE_LIMIT_ORG_RPM = env_int("SWITCHYARD_RATE_LIMIT_ORG_RPM", 0)
SWITCHYARD_RATE_LIMIT_ORG_TPM = env_int("SWITCHYARD_RATE_LIMIT_ORG_TPM", 0)
SWITCHYARD_FREE_REQUESTS_PER_MINUTE = env_int("SWITCHYARD_FREE_REQUESTS_PER_MINUTE", 20)
SWITCHYARD_FREE_REQUESTS_PER_DAY = env_int("SWITCHYARD_FREE_REQUESTS_PER_DAY", 50)
SWITCHYARD_FREE_REQUESTS_PER_DAY_PURCHASED = env_int("SWITCHYARD_FREE_REQUESTS_PER_DAY_PURCHASED", 1000)
SWITCHYARD_FREE_PURCHASED_THRESHOLD_USD = env_decimal("SWITCHYARD_FREE_PURCHASED_THRESHOLD_USD", "10")
for _name in (
    "SWITCHYARD_MAX_BODY_BYTES",
    "SWITCHYARD_MAX_JSON_DEPTH",
    "SWITCHYARD_MAX_MESSAGES",
    "SWITCHYARD_MAX_STRING_CHARS",
    "SWITCHYARD_MAX_OUTPUT_TOKENS",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1.")
for _name in (
    "SWITCHYARD_RATE_LIMIT_KEY_RPM",
    "SWITCHYARD_RATE_LIMIT_KEY_TPM",
    "SWITCHYARD_RATE_LIMIT_ORG_RPM",
    "SWITCHYARD_RATE_LIMIT_ORG_TPM",
    "SWITCHYARD_FREE_REQUESTS_PER_MINUTE",
    "SWITCHYARD_FREE_REQUESTS_PER_DAY",
    "SWITCHYARD_FREE_REQUESTS_PER_DAY_PURCHASED",
    "SWITCHYARD_FREE_PURCHASED_THRESHOLD_USD",
):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 (no limit) or more.")
SWITCHYARD_HOLD_TTL_SECONDS = env_int("SWITCHYARD_HOLD_TTL_SECONDS", 900)
# Failure policy: how long a settlement keeps retrying while Redis is unreachable, and how long a usage
# batch a dead Celery worker read stays unclaimed before another worker redoes it (milliseconds).
SWITCHYARD_SETTLE_RETRY_SECONDS = env_int("SWITCHYARD_SETTLE_RETRY_SECONDS", 300)
SWITCHYARD_USAGE_CLAIM_IDLE_MS = env_int("SWITCHYARD_USAGE_CLAIM_IDLE_MS", 30_000)
# Full mode refuses a Redis without an append-only file (usage waits there until drained) unless this
# accepts the risk (docs/failure-policy.md). The test suite runs against a throwaway Redis: accepted.
SWITCHYARD_REDIS_ALLOW_VOLATILE = env_bool("SWITCHYARD_REDIS_ALLOW_VOLATILE", TESTING)
# How long a web process keeps each usage event it settled, to write it again if Redis loses its
# data before the drain has (billing/recovery.py); the drain normally takes about a second.
SWITCHYARD_USAGE_KEEP_SECONDS = env_int("SWITCHYARD_USAGE_KEEP_SECONDS", 60)
SWITCHYARD_PROCESSING_COMMENT_SECONDS = env_decimal("SWITCHYARD_PROCESSING_COMMENT_SECONDS", "2")
# Deployment-wide caps on every provider's catalog timeouts (seconds; 0 = the catalog's own values).
SWITCHYARD_CONNECT_TIMEOUT_SECONDS = env_decimal("SWITCHYARD_CONNECT_TIMEOUT_SECONDS", "0")
SWITCHYARD_FIRST_BYTE_TIMEOUT_SECONDS = env_decimal("SWITCHYARD_FIRST_BYTE_TIMEOUT_SECONDS", "0")
SWITCHYARD_IDLE_TIMEOUT_SECONDS = env_decimal("SWITCHYARD_IDLE_TIMEOUT_SECONDS", "0")
SWITCHYARD_TOTAL_TIMEOUT_SECONDS = env_decimal("SWITCHYARD_TOTAL_TIMEOUT_SECONDS", "0")
SWITCHYARD_DEMO_CREDITS = env_decimal("SWITCHYARD_DEMO_CREDITS", "10")
# Routing health (routing/health.py): consecutive failures that open an endpoint's circuit, seconds it
# stays open before probes, seconds between probes per process; sticky routing (routing/router.py).
SWITCHYARD_BREAKER_THRESHOLD = env_int("SWITCHYARD_BREAKER_THRESHOLD", 5)
SWITCHYARD_BREAKER_COOLDOWN_SECONDS = env_decimal("SWITCHYARD_BREAKER_COOLDOWN_SECONDS", "30")
SWITCHYARD_BREAKER_PROBE_SECONDS = env_decimal("SWITCHYARD_BREAKER_PROBE_SECONDS", "5")
SWITCHYARD_STICKY_TTL_SECONDS = env_int("SWITCHYARD_STICKY_TTL_SECONDS", 300)
SWITCHYARD_STICKY_MIN_PROMPT_TOKENS = env_int("SWITCHYARD_STICKY_MIN_PROMPT_TOKENS", 1024)
# Image URLs fetched for providers that need inline data (Gemini) may never reach private, loopback or
# link-local addresses; only tests that serve images from 127.0.0.1 turn this on.
SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = env_bool("SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE", False)
# Limits of one image download: its size, the time for all of it (redirects included), redirect hops.
SWITCHYARD_IMAGE_FETCH_MAX_BYTES = env_int("SWITCHYARD_IMAGE_FETCH_MAX_BYTES", 10 * 1024 * 1024)
SWITCHYARD_IMAGE_FETCH_TIMEOUT_SECONDS = env_decimal("SWITCHYARD_IMAGE_FETCH_TIMEOUT_SECONDS", "10")
SWITCHYARD_IMAGE_FETCH_MAX_REDIRECTS = env_int("SWITCHYARD_IMAGE_FETCH_MAX_REDIRECTS", 3)
# The upstream HTTP client (routing/gateway/upstream.py): connections per provider origin and worker
# process (a call past it waits for one, within its connect timeout), and extra CAs to trust (PEM file).
SWITCHYARD_UPSTREAM_MAX_CONNECTIONS_PER_ORIGIN = env_int(
    "SWITCHYARD_UPSTREAM_MAX_CONNECTIONS_PER_ORIGIN", 256
)
SWITCHYARD_UPSTREAM_CA_BUNDLE = env_str("SWITCHYARD_UPSTREAM_CA_BUNDLE", "")

# The one switch for serving production over plain HTTP on a private network (docs/operations/
# production.md): no HTTPS redirect (and no HTTPS-only refusal on /api/), no Secure cookies, no HSTS.
SWITCHYARD_PLAIN_HTTP = env_bool("SWITCHYARD_PLAIN_HTTP", False)
if not DEBUG and not LOCAL:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not SWITCHYARD_PLAIN_HTTP)
    SESSION_COOKIE_SECURE = not SWITCHYARD_PLAIN_HTTP
    CSRF_COOKIE_SECURE = not SWITCHYARD_PLAIN_HTTP
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if SWITCHYARD_PLAIN_HTTP else 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = not SWITCHYARD_PLAIN_HTTP
    SECURE_HSTS_PRELOAD = not SWITCHYARD_PLAIN_HTTP
# The API is never redirected (clients do not follow a 301 on POST): routing/gateway/app.py answers a
# plain-HTTP /api/ call with a JSON 403 naming HTTPS instead, for the hot path and the DRF views alike.
SECURE_REDIRECT_EXEMPT = [r"^api/"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # the pages carry the token in the body (hx-headers); no script reads the cookie
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# Content-Security-Policy (django-csp): scripts only from our own static files (no inline script, no
# eval); inline style attributes are allowed (htmx and Chart.js set them); no framing, no plugins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],  # the API reference (Redoc) indexes in a blob: worker
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Django admin login throttle (django-axes, admin only; the dashboard's sign-in has allauth's own rate
# limits): after this many failures an IP address, or a username, is locked out for the cool-off time.
AXES_ONLY_ADMIN_SITE = True
AXES_HANDLER = "accounts.throttle.AdminOnlyAxesHandler"
AXES_FAILURE_LIMIT = env_int("SWITCHYARD_ADMIN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("SWITCHYARD_ADMIN_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successful logins: staff ones are in the audit log; failures are kept
AXES_VERBOSE = False  # no start-up banner; lockouts are still logged as warnings
AXES_USERNAME_FORM_FIELD = "username"
# Behind a load balancer, how many proxies append to X-Forwarded-For (0: use the peer address).
AXES_IPWARE_PROXY_COUNT = env_int("SWITCHYARD_TRUSTED_PROXY_COUNT", 0) or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if AXES_IPWARE_PROXY_COUNT else ["REMOTE_ADDR"]
)

# Production (README "Production"): JSON log lines carrying the request's generation id; graceful
# shutdown deadline for in-flight streams; who may read /metrics; one beat per deployment.
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG or LOCAL else "json")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}.")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# uvicorn's per-request access lines: off unless asked for (`manage.py serve --access-log` sets it).
SWITCHYARD_ACCESS_LOG = env_bool("SWITCHYARD_ACCESS_LOG", False)
LOGGING = logging_config(fmt=LOG_FORMAT, level=LOG_LEVEL, access=SWITCHYARD_ACCESS_LOG)
# django-axes logs every login at INFO; its lockouts (the part worth reading) are warnings.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}
SWITCHYARD_SHUTDOWN_DRAIN_SECONDS = env_int("SWITCHYARD_SHUTDOWN_DRAIN_SECONDS", 25)
# Read deadlines and the connection limit of the web server (switchyard/server.py): a client's request
# headers must arrive within the first, its body within the second (whole deadlines: a trickle cannot
# stretch them); 0 turns one off. Connections beyond the limit, per process, get a 503 JSON.
SWITCHYARD_HEADER_TIMEOUT = env_decimal("SWITCHYARD_HEADER_TIMEOUT", "10")
SWITCHYARD_BODY_TIMEOUT = env_decimal("SWITCHYARD_BODY_TIMEOUT", "60")
SWITCHYARD_MAX_CONNECTIONS = env_int("SWITCHYARD_MAX_CONNECTIONS", 1000)
for _name in ("SWITCHYARD_HEADER_TIMEOUT", "SWITCHYARD_BODY_TIMEOUT", "SWITCHYARD_MAX_CONNECTIONS"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} cannot be negative (0 turns it off).")
SWITCHYARD_METRICS_TOKEN = env_str("SWITCHYARD_METRICS_TOKEN", "")
SWITCHYARD_METRICS_ALLOWED_NETWORKS = env_list(
    "SWITCHYARD_METRICS_ALLOWED_NETWORKS", ["127.0.0.1/32", "::1/128"]
)
CELERY_BEAT_SCHEDULER = "switchyard.beat:SingleBeatScheduler"

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(VAR_DIR / "tiktoken"))

# --- Single sign-on (docs/sso.md) ------------------------------------------------------------------
# Google, GitHub and any OpenID Connect provider through allauth's social accounts. Off unless the
# operator configures a provider: SWITCHYARD_GOOGLE_CLIENT_ID/_SECRET, SWITCHYARD_GITHUB_CLIENT_ID/
# _SECRET, SWITCHYARD_OIDC_PROVIDERS (a JSON list), or a "Social application" in the Django admin.
# Without one there is no button and accounts.sso.SsoGateMiddleware answers the provider URLs 404.
INSTALLED_APPS += [
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.socialaccount.providers.google",
    "allauth.socialaccount.providers.github",
]
MIDDLEWARE.insert(MIDDLEWARE.index("axes.middleware.AxesMiddleware"), "accounts.sso.SsoGateMiddleware")
SOCIALACCOUNT_PROVIDERS = social_providers()
# Linking rule: a provider's sign-in reaches an existing account only through an address the provider
# says it verified (email_verified); the social account is then connected to that account. An
# unverified address never signs in to, nor links with, an existing account.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_EMAIL_VERIFICATION = ACCOUNT_EMAIL_VERIFICATION  # an unverified address is verified by mail
SOCIALACCOUNT_EMAIL_REQUIRED = True
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_LOGIN_ON_GET = False  # the buttons POST (with the CSRF token); a GET shows a confirm page
SOCIALACCOUNT_STORE_TOKENS = False  # sign-in only: the provider's tokens are never kept
SOCIALACCOUNT_REQUESTS_TIMEOUT = env_int("SWITCHYARD_SSO_TIMEOUT_SECONDS", 5)
# --- end single sign-on ----------------------------------------------------------------------------
