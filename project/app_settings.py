"""The apps' own settings: sign-up and telemetry limits, email provider protection, metrics, retention.

Each is read from its environment variable like those of project/settings.py,
which imports them by name; none depends on DEBUG. The rates are parsed here,
so that a typo stops the process at start instead of at first use.
"""

from __future__ import annotations

from project import startup_checks
from project.env import env_float, env_int, env_str

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

# --- Email provider protection ------------------------------------------------

# The provider's limit for the whole cluster, shared by every worker through a
# token bucket in Redis (Celery's rate_limit would count per process). Written
# like Celery's rate_limit: "10/s", "600/m", "36000/h". Checked now, so that a
# typo stops the process at start instead of at the first email.
EMAIL_RATE_LIMIT = env_str("EMAIL_RATE_LIMIT", "10/s")
startup_checks.check_rates(
    EMAIL_RATE_LIMIT=EMAIL_RATE_LIMIT,
    TELEMETRY_DEVICE_RATE=TELEMETRY_DEVICE_RATE,
    SIGNUPS_RESEND_RATE_LIMIT=SIGNUPS_RESEND_RATE_LIMIT,
    SIGNUPS_RESEND_ADDRESS_LIMIT=SIGNUPS_RESEND_ADDRESS_LIMIT,
)
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

# --- Metrics ------------------------------------------------------------------

# /metrics (ops/metrics.py) answers only requests that carry "Authorization:
# Bearer <this token>". Empty, it answers loopback clients only (not through a
# proxy): closed by default, DEBUG on or off, since a scrape reads every source.
# The mode in force is logged at start. METRICS_TOKEN_FILE names a file holding
# the token instead (a Docker or Kubernetes secret; docker-compose generates one).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_TOKEN_FILE = env_str("METRICS_TOKEN_FILE", "")
METRICS_TOKEN = startup_checks.metrics_token(METRICS_TOKEN, METRICS_TOKEN_FILE)

# --- Retention ----------------------------------------------------------------

# How long each of this project's growing tables keeps its rows (docs/operations.md,
# "Retention"); the bus's own tables keep theirs by EVENTBUS_*_RETENTION_DAYS
# (eventbus/conf.py). Beat's eventbus.purge_expired deletes older rows every ten
# minutes in bounded chunks (eventbus/operations/retention.py); raw readings
# have a task of their own (CELERY_BEAT_SCHEDULE, project/settings.py).
# Analytics records, by the event's time: the page charts 14 days; a year
# leaves a year-over-year comparison possible, at one small row per event.
ANALYTICS_RETENTION_DAYS = env_int("ANALYTICS_RETENTION_DAYS", 365, minimum=1)
# Per-minute rollups: one row per device, metric and minute, 60 times fewer
# than raw readings at one a second; three months of history for the charts.
TELEMETRY_ROLLUP_RETENTION_DAYS = env_int("TELEMETRY_ROLLUP_RETENTION_DAYS", 90, minimum=1)
