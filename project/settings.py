"""Django settings, every one read from the environment.

The variables, their defaults and what they do are listed in `.env.example`
and docs/configuration.md. Defaults are safe for development on one machine: SQLite in
``var/``, a Redis on localhost, DEBUG on, secrets that are obviously not secret.
"""

from __future__ import annotations

from pathlib import Path

from eventbus import conf as eventbus_conf
from eventbus.celery_settings import beat_schedule, celery_settings
from project import queues, startup_checks
from project.database import database
from project.env import env_bool, env_int, env_list, env_setting, env_str
from project.logging_config import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
# Local state (SQLite, the dev inbox, a Redis of the run command's own) lives here.
VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Core -----------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", startup_checks.DEV_SECRET)
# With DEBUG off the process refuses a key anyone could know or guess (project/startup_checks.py).
startup_checks.check_secret_key(SECRET_KEY, debug=DEBUG)
# The development list must not reach production: there the host names are
# always written down (Django answers 400 to any other Host header).
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [])
startup_checks.check_allowed_hosts(ALLOWED_HOSTS, debug=DEBUG)
WEB_PORT = env_int("WEB_PORT", 8000, minimum=1)
# Absolute base of links that leave the site (the verification link in an email).
# In production it must be written down: a default would send every new user a
# link to 127.0.0.1.
SITE_URL = env_str("SITE_URL", f"http://127.0.0.1:{WEB_PORT}" if DEBUG else "").rstrip("/")
startup_checks.check_site_url(SITE_URL, debug=DEBUG)
# Two production settings that are legal but almost always a mistake ("*" in
# ALLOWED_HOSTS, an http:// SITE_URL), refused unless a setting of its own says
# the operator means it (why: project/startup_checks.py).
DJANGO_ALLOW_ANY_HOST = env_bool("DJANGO_ALLOW_ANY_HOST", False)
SITE_URL_ALLOW_HTTP = env_bool("SITE_URL_ALLOW_HTTP", False)
startup_checks.check_risky_production(
    ALLOWED_HOSTS,
    SITE_URL,
    debug=DEBUG,
    allow_any_host=DJANGO_ALLOW_ANY_HOST,
    site_url_allow_http=SITE_URL_ALLOW_HTTP,
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "eventbus",
    "signups",
    "notifications",
    "analytics",
    "telemetry",
    "devinbox",
    "ops",
    # The patterns lab: `manage.py demo <name>` (docs/patterns.md). No models, no URLs.
    "lab",
]
# Fault-injection tests (tests/faults) start real worker subprocesses that must
# know their test-only subscribers; nothing else sets this.
if env_bool("EVENTDEMO_FAULT_APPS", False):
    INSTALLED_APPS.append("tests.faults.faultapp")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files answered before any other middleware runs (whitenoise's
    # documented place): no session, no database, no correlation id for them.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "eventbus.observability.middleware.CorrelationIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

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
                "project.context_processors.site",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------

DATABASES = {
    "default": database(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        # A connection per request or task costs a connect (and on SQLite
        # the PRAGMAs of project/database.py; on PostgreSQL a new server process):
        # keep it a minute, checked before reuse. Workers honour it too (project/celery.py).
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        # SQLite only: a worker subprocess cannot see an in-memory test database.
        sqlite_test_name=env_str("TEST_DATABASE_PATH", str(VAR_DIR / "test-db.sqlite3")),
    )
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Benchmarks and tests may swap in a fast hasher; production keeps Django's default.
if env_bool("DJANGO_FAST_PASSWORD_HASHER", False):
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# `manage.py collectstatic` writes here; whitenoise serves it (compose/start-web collects at start).
STATIC_ROOT = VAR_DIR / "static"
if DEBUG:
    # Development and tests never collect; whitenoise would warn at every start that it is missing.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# With DEBUG off, static files get content-hashed names and compressed copies
# at collectstatic time, which whitenoise serves with a far-future cache header.
# With DEBUG on (development, tests) the plain storage needs no collectstatic:
# whitenoise and runserver find the files in STATICFILES_DIRS and the apps.
# https://whitenoise.readthedocs.io/en/stable/django.html
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Django's sign-in page (project/urls.py); after it, the page asked for or the home page.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"

# --- Security ---------------------------------------------------------------

# Every default below is secure when DEBUG is off and out of the way when it
# is on (runserver speaks plain HTTP). `manage.py check --deploy` reports
# nothing with DEBUG off and the defaults (tests/project/test_deploy.py). What each
# protects, and when to change it: docs/security.md.
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the status page's script reads nothing from it; forms post the token
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# A plain-HTTP request is redirected to HTTPS (301).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# Except the probes and the scrape, which load balancers, orchestrators and
# Prometheus send to the web process itself over plain HTTP, and which a
# redirect would break. (Matched against the path without its leading slash.)
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
# HSTS: browsers that saw the site over HTTPS refuse plain HTTP to it for this
# long. A year, with subdomains and the preload directive: what the preload
# list (hstspreload.org) asks for. Django sends it on HTTPS responses only.
# The directives are commitments hard to take back: see docs/security.md.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
# Behind a proxy that terminates TLS, the request reaches Django as plain HTTP;
# the proxy says it was HTTPS in X-Forwarded-Proto. Trusted only when this says
# so, because a client could send the header itself: turn it on only when the
# proxy always sets (overwrites) it and nothing else can reach the web process.
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Origins (scheme://host[:port]) allowed to POST besides the site's own, as
# CSRF checks the Origin header against the Host. Needed when the proxy
# rewrites Host, or a form is served from another origin.
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# --- Email ------------------------------------------------------------------

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env_str("EMAIL_HOST", "127.0.0.1")
EMAIL_PORT = env_int("EMAIL_PORT", 1025, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# A hung SMTP server must fail the task (and retry it), not hold a worker forever.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Event Demo <no-reply@example.com>")

# The dev inbox lists what the run command's SMTP sink stored here (DEBUG only).
DEVINBOX_DIR = Path(env_str("DEVINBOX_DIR", str(VAR_DIR / "mail")))

# --- Sign-ups, telemetry, email provider protection, metrics, retention ------

# The apps' own settings: each read from its variable, with its default and why,
# in project/app_settings.py (none depends on DEBUG).
from project import app_settings  # noqa: E402

SIGNUPS_VERIFICATION_MAX_AGE = app_settings.SIGNUPS_VERIFICATION_MAX_AGE
SIGNUP_RATE_LIMIT = app_settings.SIGNUP_RATE_LIMIT
SIGNUP_RATE_BURST = app_settings.SIGNUP_RATE_BURST
SIGNUPS_RESEND_RATE_LIMIT = app_settings.SIGNUPS_RESEND_RATE_LIMIT
SIGNUPS_RESEND_RATE_BURST = app_settings.SIGNUPS_RESEND_RATE_BURST
SIGNUPS_RESEND_ADDRESS_LIMIT = app_settings.SIGNUPS_RESEND_ADDRESS_LIMIT
TELEMETRY_DEVICE_RATE = app_settings.TELEMETRY_DEVICE_RATE
TELEMETRY_RETENTION_DAYS = app_settings.TELEMETRY_RETENTION_DAYS
TELEMETRY_MAX_METRICS_PER_DEVICE = app_settings.TELEMETRY_MAX_METRICS_PER_DEVICE
EMAIL_RATE_LIMIT = app_settings.EMAIL_RATE_LIMIT
EMAIL_RATE_LIMIT_GUARD = app_settings.EMAIL_RATE_LIMIT_GUARD
EMAIL_BREAKER_FAILURE_THRESHOLD = app_settings.EMAIL_BREAKER_FAILURE_THRESHOLD
EMAIL_BREAKER_RESET_TIMEOUT = app_settings.EMAIL_BREAKER_RESET_TIMEOUT
METRICS_TOKEN = app_settings.METRICS_TOKEN
METRICS_TOKEN_FILE = app_settings.METRICS_TOKEN_FILE
ANALYTICS_RETENTION_DAYS = app_settings.ANALYTICS_RETENTION_DAYS
TELEMETRY_ROLLUP_RETENTION_DAYS = app_settings.TELEMETRY_ROLLUP_RETENTION_DAYS

# --- Redis, Celery and the event bus ----------------------------------------

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Prepended to every Redis key the project writes, the broker's included, so
# that several deployments (or a test run) can share one Redis database.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "")

# Redis behind Sentinel (eventbus/sentinel.py): the Sentinels name the primary, REDIS_URL
# then gives only the database index, and the broker URL is derived (leave
# CELERY_BROKER_URL unset, or point it at RabbitMQ). Passwords only from here.
REDIS_SENTINELS = env_str("REDIS_SENTINELS", "").strip()
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", "").strip()
REDIS_PASSWORD = env_str("REDIS_PASSWORD", "")
REDIS_SENTINEL_PASSWORD = env_str("REDIS_SENTINEL_PASSWORD", "")

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "" if REDIS_SENTINELS else REDIS_URL)
startup_checks.check_redis_sentinel(globals())
CELERY_RESULT_EXPIRES = env_int("CELERY_RESULT_EXPIRES", 7 * 24 * 3600, minimum=0)
# One message reserved per process: a slow email never holds back messages a
# free process could take. https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1, minimum=1)

# The event bus: its settings, their defaults and why are in eventbus/conf.py;
# here each is read from its environment variable (.env.example lists them).
# The queues are this project's (project/queues.py).
EVENTBUS_QUEUES = queues.WORKER_QUEUES
EVENTBUS_DEAD_LETTER_QUEUE = queues.DEAD_LETTER
EVENTBUS_HOUSEKEEPING_QUEUE = queues.EVENTBUS
# Every CloudEvent this service hands out names it as its source, and its payload's
# schema under the URL eventbus/urls.py serves at /events/ (eventbus/contract/cloudevents.py).
EVENTBUS_SOURCE = env_str("EVENTBUS_SOURCE", SITE_URL)
EVENTBUS_SCHEMA_URL = env_str("EVENTBUS_SCHEMA_URL", f"{SITE_URL}/events/schemas")
_bus = {s.name: env_setting(s.env, s.default, minimum=s.minimum) for s in eventbus_conf.SETTINGS if s.env}
globals().update(_bus)
globals().update(eventbus_conf.derived(_bus))
# classic (the default) or quorum (RabbitMQ quorum queues, eventbus/celery_settings.py); refused on another broker.
EVENTBUS_QUEUE_TYPE = str(_bus["EVENTBUS_QUEUE_TYPE"]).strip().lower()
startup_checks.check_queue_type(EVENTBUS_QUEUE_TYPE, CELERY_BROKER_URL)
# The CELERY_* settings the bus requires (at least once, JSON only, its queues,
# routes and beat schedule), derived from the above (eventbus/celery_settings.py).
# How they must relate to each other is checked as the bus loads (eventbus/operations/checks.py).
globals().update(celery_settings(globals()))
CELERY_BEAT_SCHEDULE = beat_schedule(globals())
# Tasks that meet the email rate limiter or an open breaker are rescheduled with
# that wait as countdown: neither may reach the visibility timeout (project/startup_checks.py).
startup_checks.check_email_countdowns(
    EMAIL_RATE_LIMIT, EMAIL_BREAKER_RESET_TIMEOUT, _bus["EVENTBUS_VISIBILITY_TIMEOUT"]
)

# Task events cost the worker's main process a Redis PUBLISH per task and
# state (a fifth of its time in docs/benchmarks.md), so workers send them only
# while someone watches: Flower turns them on when it starts and every few
# seconds after (its enable_events option, on by default), as does
# `celery control enable_events`. CELERY_WORKER_SEND_TASK_EVENTS=1 sends them always.
# Celery's Django fix-up closes the database connection around every task
# unless this is set; set, connections follow DATABASE_CONN_MAX_AGE and are
# checked around each task (eventbus/fastpath/dbconnections.py), as Django does per request.
CELERY_DB_REUSE_MAX = 1_000_000 if DATABASES["default"].get("CONN_MAX_AGE") else None
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_WORKER_SEND_TASK_EVENTS", False)
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Flower -----------------------------------------------------------------

FLOWER_PORT = env_int("FLOWER_PORT", 5555, minimum=1)
FLOWER_URL = env_str("FLOWER_URL", f"http://127.0.0.1:{FLOWER_PORT}")

# --- Logging ----------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# "json": one JSON object per line, for a log collector (the default with DEBUG
# off); "text": readable lines (the default with DEBUG on). See project/logging.py.
LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json").lower()
# The same configuration serves the web process, and workers and beat through
# Celery's setup_logging signal (project/celery.py); what it holds: project/logging_config.py.
LOGGING = logging_config(LOG_LEVEL, LOG_FORMAT)

# Every ten minutes: each run deletes at most a bounded number of expired
# readings (telemetry/retention.py), so a run never holds the database long.
CELERY_BEAT_SCHEDULE["telemetry.purge_readings"] = {
    "task": "telemetry.purge_readings",
    "schedule": 600.0,
    "options": {"queue": queues.TELEMETRY, "expires": 600.0},
}
