"""Django settings, every one read from the environment.

The variables, their defaults and what they do are listed in `.env.example`
and docs/configuration.md. Defaults are safe for development on one machine: SQLite in
``var/``, a Redis on localhost, DEBUG on, secrets that are obviously not secret.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from eventbus import conf as eventbus_conf
from eventbus.celery_settings import beat_schedule, celery_settings
from project import queues
from project.env import env_bool, env_float, env_int, env_list, env_setting, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
# Local state (SQLite, the dev inbox, a Redis of the run command's own) lives here.
VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Core -----------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", True)
_DEV_SECRET = "dev-insecure-secret-key-change-me-in-production-0123456789"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", _DEV_SECRET)
# With DEBUG off the process refuses to start on a key anyone could know or
# guess, rather than leaving it to `check --deploy` (which nobody has to run).
# The thresholds are those of Django's own check, security.W009.
_SECRET_HOWTO = (
    "set DJANGO_SECRET_KEY to a long random value, e.g. the output of "
    "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
)
if not DEBUG and SECRET_KEY == _DEV_SECRET:
    raise ImproperlyConfigured(
        f"DJANGO_DEBUG is off but DJANGO_SECRET_KEY is unset (or the development default): {_SECRET_HOWTO}."
    )
if not DEBUG and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-")):
    # The message describes the key, never repeats it: it may end up in a log.
    raise ImproperlyConfigured(
        f"DJANGO_DEBUG is off but DJANGO_SECRET_KEY is weak ({len(SECRET_KEY)} characters, "
        f"{len(set(SECRET_KEY))} distinct; at least 50 characters, 5 distinct and no 'django-insecure-' "
        f"prefix are needed): {_SECRET_HOWTO}."
    )
# The development list must not reach production: there the host names are
# always written down (Django answers 400 to any other Host header).
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is off but DJANGO_ALLOWED_HOSTS is unset or empty: set it to the host names the site "
        "answers to, comma-separated, e.g. DJANGO_ALLOWED_HOSTS=example.com,www.example.com."
    )
WEB_PORT = env_int("WEB_PORT", 8000, minimum=1)
# Absolute base of links that leave the site (the verification link in an email).
# In production it must be written down: a default would send every new user a
# link to 127.0.0.1.
SITE_URL = env_str("SITE_URL", f"http://127.0.0.1:{WEB_PORT}" if DEBUG else "").rstrip("/")
if not DEBUG and not SITE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is off but SITE_URL is unset or not an http(s) URL: set it to the site's public address, "
        "e.g. SITE_URL=https://example.com (the verification link in the welcome email starts with it)."
    )
# Two production settings that are legal but almost always a mistake, refused
# unless a setting of its own says the operator means it. "*" in ALLOWED_HOSTS
# turns off Django's Host check (the only pattern that admits every host: a
# leading-dot pattern admits one domain and its subdomains), so a forged Host
# reaches password-reset links, caches and logs. An http:// SITE_URL sends the
# verification link, a bearer secret, over plain HTTP in every welcome email.
DJANGO_ALLOW_ANY_HOST = env_bool("DJANGO_ALLOW_ANY_HOST", False)
SITE_URL_ALLOW_HTTP = env_bool("SITE_URL_ALLOW_HTTP", False)
if not DEBUG and "*" in ALLOWED_HOSTS and not DJANGO_ALLOW_ANY_HOST:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is off but DJANGO_ALLOWED_HOSTS contains '*', which admits any Host header: list the host "
        "names the site answers to instead, e.g. DJANGO_ALLOWED_HOSTS=example.com,www.example.com, or set "
        "DJANGO_ALLOW_ANY_HOST=1 if a proxy in front already checks Host."
    )
if not DEBUG and SITE_URL.startswith("http://") and not SITE_URL_ALLOW_HTTP:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is off but SITE_URL starts with http://: the verification link in the welcome email would "
        "travel unencrypted. Set SITE_URL=https://example.com (the site's public HTTPS address), or set "
        "SITE_URL_ALLOW_HTTP=1 if plain HTTP is meant (a private test deployment)."
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
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        # A connection per request or task costs a connect (and on SQLite
        # the PRAGMAs below; on PostgreSQL a new server process): keep it a
        # minute, checked before reuse. Workers honour it too (project/celery.py).
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process, several worker pools, beat and the relay share one
    # SQLite file. Without WAL, a busy timeout and IMMEDIATE transactions,
    # concurrent writers fail with "database is locked" under load.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-transaction-behavior
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=20000",
    }
    # A worker subprocess cannot see an in-memory test database: tests use a file.
    DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_PATH", str(VAR_DIR / "test-db.sqlite3"))}

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

# --- Sign-ups ---------------------------------------------------------------

# How long the link in the welcome email stays valid.
SIGNUPS_VERIFICATION_MAX_AGE = env_int("SIGNUPS_VERIFICATION_MAX_AGE", 3 * 24 * 3600, minimum=60)
# Sign-up attempts per client IP, shared by every web process: a steady rate
# ("10/m") and a burst (a household or an office behind one address).
SIGNUP_RATE_LIMIT = env_str("SIGNUP_RATE_LIMIT", "10/m")
SIGNUP_RATE_BURST = env_int("SIGNUP_RATE_BURST", 5, minimum=1)
# Requests for a new verification link (signups/resend_limits.py). Per client
# IP, over it 429: a person needs one or two, a script trying addresses many.
SIGNUPS_RESEND_RATE_LIMIT = env_str("SIGNUPS_RESEND_RATE_LIMIT", "10/h")
SIGNUPS_RESEND_RATE_BURST = env_int("SIGNUPS_RESEND_RATE_BURST", 5, minimum=1)
# Per address, over it nothing is sent (and the page says the same): one email
# per address per 20 minutes, so nobody can flood a mailbox through this form.
SIGNUPS_RESEND_ADDRESS_LIMIT = env_str("SIGNUPS_RESEND_ADDRESS_LIMIT", "3/h")

# --- Telemetry ---------------------------------------------------------------

# Requests per second one device may send to /api/v1/readings, shared by every
# web process (a token bucket in Redis whose burst is one second's worth).
# Above it the API answers 429 with Retry-After. Checked at start like
# EMAIL_RATE_LIMIT below, so that a typo stops the process.
TELEMETRY_DEVICE_RATE = env_str("TELEMETRY_DEVICE_RATE", "50/s")
# Raw readings are kept this long, then deleted by beat in bounded batches
# (the per-minute rollups stay TELEMETRY_ROLLUP_RETENTION_DAYS, under Retention below).
TELEMETRY_RETENTION_DAYS = env_int("TELEMETRY_RETENTION_DAYS", 7, minimum=1)
# Distinct metric names one device may use (telemetry/metric_names.py): a
# device reports a few dozen signals, a gateway for its sensors a few hundred;
# each name is a rollup row per minute and a dashboard series, so a device
# that invents names is refused (409) instead of growing them for ever.
TELEMETRY_MAX_METRICS_PER_DEVICE = env_int("TELEMETRY_MAX_METRICS_PER_DEVICE", 1000, minimum=1)

# --- Redis, Celery and the event bus ----------------------------------------

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Prepended to every Redis key the project writes, the broker's included, so
# that several deployments (or a test run) can share one Redis database.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "")

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
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
_bus = {s.name: env_setting(s.env, s.default, minimum=s.minimum) for s in eventbus_conf.SETTINGS if s.env}
globals().update(_bus)
globals().update(eventbus_conf.derived(_bus))
# The CELERY_* settings the bus requires (at least once, JSON only, its queues,
# routes and beat schedule), derived from the above (eventbus/celery_settings.py).
# How they must relate to each other is checked as the bus loads (eventbus/operations/checks.py).
globals().update(celery_settings(globals()))
CELERY_BEAT_SCHEDULE = beat_schedule(globals())

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
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}.")
# The same configuration serves the web process, and workers and beat through
# Celery's setup_logging signal (project/celery.py). On every line: the request's
# correlation id, and the event id and type, subscriber and task id where they apply.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "project.logging.ContextFilter"},
        # Signed tokens (the verification link's) never reach a log, not even in an access log line.
        "redact": {"()": "project.logging.RedactFilter"},
        "disallowed_host": {"()": "project.logging.DisallowedHostFilter"},
        "housekeeping": {"()": "project.logging.HousekeepingFilter"},
    },
    "formatters": {
        "json": {"()": "project.logging.JsonFormatter"},
        "text": {"()": "project.logging.TextFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact", "context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": "INFO"},
        # runserver's access log has a handler of its own in Django's defaults: use ours,
        # so that its lines are JSON too and the verification link's token is redacted.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "celery": {"level": LOG_LEVEL},
        # The dev SMTP sink (aiosmtpd) logs every SMTP command with its addresses at
        # INFO, and every line of a message (the verification link) at DEBUG.
        "mail.log": {"level": "WARNING"},
        # A request with a Host not in ALLOWED_HOSTS: one WARNING line, not a traceback.
        "django.security.DisallowedHost": {"filters": ["disallowed_host"]},
        # Beat's relay and broker watch every few seconds: their routine lines at DEBUG (project/logging.py).
        **{
            name: {"filters": ["housekeeping"]}
            for name in ("celery.worker.strategy", "celery.app.trace", "celery.beat")
        },
    },
}

# --- Email provider protection ------------------------------------------------

# Imported beside the settings that need them. Safe inside settings: neither
# module reads settings nor imports models when imported.
from eventbus.operations.checks import countdown_problem  # noqa: E402
from eventbus.protection.tokenbucket import parse_rate  # noqa: E402

# The provider's limit for the whole cluster, shared by every worker through a
# token bucket in Redis (Celery's rate_limit would count per process). Written
# like Celery's rate_limit: "10/s", "600/m", "36000/h". Checked now, so that a
# typo stops the process at start instead of at the first email.
EMAIL_RATE_LIMIT = env_str("EMAIL_RATE_LIMIT", "10/s")
_EMAIL_RATE = parse_rate(EMAIL_RATE_LIMIT, setting="EMAIL_RATE_LIMIT")
parse_rate(TELEMETRY_DEVICE_RATE, setting="TELEMETRY_DEVICE_RATE")
parse_rate(SIGNUPS_RESEND_RATE_LIMIT, setting="SIGNUPS_RESEND_RATE_LIMIT")
parse_rate(SIGNUPS_RESEND_ADDRESS_LIMIT, setting="SIGNUPS_RESEND_ADDRESS_LIMIT")
# The limit is enforced over a window this much longer than its period: the
# provider counts arrivals, some time after the grant, and that delay varies.
# 0.1 s was too little on the 2-core machine: in the fault test (5/s, four
# sending processes) six arrivals fell within less than a second of each other
# in 5 of 23 runs, and the closest six were 1.017 to 1.044 s apart in six
# passing ones; with 0.2 s they were 1.087 to 1.175 s apart (six runs). 0.25 s keeps that margin and costs
# a fifth of the rate (10 per 1.25 s). See eventbus/protection/windowlimit.py.
EMAIL_RATE_LIMIT_GUARD = env_float("EMAIL_RATE_LIMIT_GUARD", 0.25, minimum=0.0)
# Consecutive failed sends (from any worker) that open the email circuit
# breaker: a few, so one flaky send does not stop email for everyone.
EMAIL_BREAKER_FAILURE_THRESHOLD = env_int("EMAIL_BREAKER_FAILURE_THRESHOLD", 5, minimum=1)
# Seconds the open breaker keeps every worker away from the provider before
# one probe tries again. It is also the probe's lease, so it must exceed the
# longest send (several SMTP round trips of up to EMAIL_TIMEOUT each).
EMAIL_BREAKER_RESET_TIMEOUT = env_float("EMAIL_BREAKER_RESET_TIMEOUT", 30.0, minimum=0.1)
# Tasks that meet a refusing limiter or an open breaker are rescheduled with
# that wait as countdown; one at or above the visibility timeout makes Redis
# deliver the task twice (kombu#337). The rule is the bus's (eventbus/operations/checks.py).
for _setting, _wait in (
    ("EMAIL_RATE_LIMIT", 1 / _EMAIL_RATE.tokens_per_second),
    ("EMAIL_BREAKER_RESET_TIMEOUT", EMAIL_BREAKER_RESET_TIMEOUT),
):
    _problem = countdown_problem(_setting, _wait, _bus["EVENTBUS_VISIBILITY_TIMEOUT"])
    if _problem:
        raise ImproperlyConfigured(_problem)

# --- Metrics ------------------------------------------------------------------

# /metrics (ops/metrics.py) answers only requests that carry "Authorization:
# Bearer <this token>". Empty, it answers loopback clients only (not through a
# proxy): closed by default, DEBUG on or off, since a scrape reads every source.
# The mode in force is logged at start. METRICS_TOKEN_FILE names a file holding
# the token instead (a Docker or Kubernetes secret; docker-compose generates one).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_TOKEN_FILE = env_str("METRICS_TOKEN_FILE", "")
if METRICS_TOKEN_FILE:
    if METRICS_TOKEN:
        raise ImproperlyConfigured("METRICS_TOKEN and METRICS_TOKEN_FILE are both set: set one of them.")
    try:
        METRICS_TOKEN = Path(METRICS_TOKEN_FILE).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"METRICS_TOKEN_FILE={METRICS_TOKEN_FILE!r} cannot be read: {exc}") from exc
    if not METRICS_TOKEN:
        raise ImproperlyConfigured(f"METRICS_TOKEN_FILE={METRICS_TOKEN_FILE!r} is empty: write the token into it.")

# --- Retention ----------------------------------------------------------------

# How long each of this project's growing tables keeps its rows (docs/operations.md,
# "Retention"); the bus's own tables keep theirs by EVENTBUS_*_RETENTION_DAYS
# (eventbus/conf.py). Beat's eventbus.purge_expired deletes older rows every ten
# minutes in bounded chunks (eventbus/operations/retention.py); raw readings
# have a task of their own below.
# Analytics records, by the event's time: the page charts 14 days; a year
# leaves a year-over-year comparison possible, at one small row per event.
ANALYTICS_RETENTION_DAYS = env_int("ANALYTICS_RETENTION_DAYS", 365, minimum=1)
# Per-minute rollups: one row per device, metric and minute, 60 times fewer
# than raw readings at one a second; three months of history for the charts.
TELEMETRY_ROLLUP_RETENTION_DAYS = env_int("TELEMETRY_ROLLUP_RETENTION_DAYS", 90, minimum=1)
# Every ten minutes: each run deletes at most a bounded number of expired
# readings (telemetry/retention.py), so a run never holds the database long.
CELERY_BEAT_SCHEDULE["telemetry.purge_readings"] = {
    "task": "telemetry.purge_readings",
    "schedule": 600.0,
    "options": {"queue": queues.TELEMETRY, "expires": 600.0},
}
