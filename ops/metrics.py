"""``/metrics``: the event bus in Prometheus's text format, read from its own records at scrape time.

The web process keeps no metric of its own: every value comes from what all
processes share (the outbox, the ledger and dead letters in the database;
counters, the latency histogram and breakers in Redis; queue depths from the
broker), read when Prometheus asks. So any web process answers for the whole
cluster, and a restart loses nothing. Each worker's stall verdict is
ops/metrics_workers.py's; task runtimes per worker are Flower's (its own ``/metrics``).

A scrape costs the same whatever the outbox holds (docs/benchmarks.md, figure
M): no query counts a table that only grows. The outbox's size is the
database's own estimate (``outbox_rows_estimate``); what is counted is only
what waits (pending and deferred rows, on the (status, created_at) index) and
what is unsettled (the reconciler's partial index). Those counts are bounded
by the backlog, not the table: they are the figures an operator alerts on,
they are small when the system is healthy, and when a backlog does grow the
exact number is worth the scan. Events published and dispatched per type
are not counted here any more: that was a GROUP BY over the whole outbox at
every scrape (0.45 s over 300,000 rows), and once old rows are deleted it
was no counter anyway; ``eventbus_delivered_total`` per subscriber gives the
rates.

A source that fails leaves its families out and sets
``eventbus_metrics_source_up{source=...}`` to 0, so a scrape still answers
when Redis or the broker is down.

Access (``access_mode()``, logged by project/wsgi.py as the web process
starts): with ``METRICS_TOKEN`` set, a request must carry ``Authorization:
Bearer <token>`` (else 401); empty, only a client on the loopback interface is
answered, and not one that came through a proxy (a request carrying a
forwarding header), else 403. Nothing is open by default, DEBUG on or off.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable, Iterator

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from eventbus import ops_api
from eventbus.models import OutboxEvent
from ops import metrics_workers, status
from project import queues
from telemetry.door import throttled_counts

BREAKER_STATE_VALUES = {ops_api.CLOSED: 0, ops_api.HALF_OPEN: 1, ops_api.OPEN: 2}

COUNTER_HELP = {
    "delivered": "Effects that happened, one per event and subscriber.",
    "duplicates": "Deliveries the ledger skipped: the effect had already happened.",
    "retries": "Transient failures retried.",
    "dead_lettered": "Messages sent to the dead-letter queue.",
    "shed": "Events dropped for a sheddable subscriber whose queue was above its high-water mark.",
    "deferred": "Events held in the outbox for a critical subscriber whose queue was above its high-water mark.",
    "stale": "Events an ordered subscriber ignored: a later event of the aggregate was applied.",
    "order_waits": "Times an ordered subscriber deferred an event whose predecessor it had not handled.",
    "rate_limit_waits": "Tasks rescheduled to wait for a rate-limit token.",
    "breaker_waits": "Tasks rescheduled because a circuit breaker was open.",
    "redelivered": "Deliveries the reconciler sent again: the broker took them, the ledger never saw them end.",
}


def outbox_rows_estimate() -> int | None:
    """Rows in the outbox as the database estimates them, without counting; None on a database not known here.

    PostgreSQL: ``n_live_tup`` of ``pg_stat_user_tables``, which the server
    updates as transactions commit (within a second or so) and keeps until a
    crash or ``pg_stat_reset()``. SQLite keeps no such figure: the span of
    rowids (the first and the last row, two index lookups) counts every row
    between them, deleted ones too, so it reads high while a purge has made
    holes in the middle.
    """
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = %s::regclass", [table])
        elif connection.vendor == "sqlite":
            # Two subqueries: SQLite reads min() or max() off the rowid's ends only when it is a query's one aggregate.
            cursor.execute(f"SELECT (SELECT max(rowid) FROM {table}) - (SELECT min(rowid) FROM {table}) + 1")
        else:
            return None
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _families_outbox() -> Iterator[Metric]:
    estimate = outbox_rows_estimate()
    if estimate is not None:
        yield GaugeMetricFamily(
            "eventbus_outbox_rows_estimate",
            "Rows kept in the outbox, as the database estimates them (never counted: the table is large).",
            value=estimate,
        )
    outbox = status.outbox_status()
    yield GaugeMetricFamily(
        "eventbus_outbox_waiting", "Events not yet handed to every subscriber's queue.", value=outbox.waiting
    )
    waiting = GaugeMetricFamily(
        "eventbus_outbox_waiting_by_status", "Waiting outbox events, pending or deferred.", labels=["status"]
    )
    waiting.add_metric(["pending"], outbox.pending)
    waiting.add_metric(["deferred"], outbox.deferred)
    yield waiting
    yield GaugeMetricFamily(
        "eventbus_outbox_oldest_age_seconds",
        "Age of the oldest waiting outbox event; 0 when none waits.",
        value=outbox.oldest_age_seconds or 0.0,
    )


def _families_reconcile() -> Iterator[Metric]:
    reconciled = status.reconcile_status()
    yield GaugeMetricFamily(
        "eventbus_deliveries_unsettled",
        "Sent events not every delivery of which has ended yet (ledger or dead letter).",
        value=reconciled.unsettled,
    )
    yield GaugeMetricFamily(
        "eventbus_deliveries_overdue",
        "Unsettled events sent more than EVENTBUS_REDELIVER_AFTER ago: the reconciler's backlog.",
        value=reconciled.overdue,
    )
    yield CounterMetricFamily(
        "eventbus_broker_losses",
        "Times the broker's Redis was found to have lost its data (its marker gone or older).",
        value=reconciled.broker_losses,
    )


def _families_dead_letters() -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "eventbus_dead_letters", "Dead letters stored (not purged), by subscriber.", labels=["subscriber"]
    )
    stored = status.dead_letters_by_subscriber()
    for name in sorted({s.name for s in ops_api.subscriptions()} | set(stored)):
        family.add_metric([name], stored.get(name, 0))
    yield family


def _families_queues() -> Iterator[Metric]:
    depths = status.queue_depths()
    depth = GaugeMetricFamily("eventbus_queue_depth", "Messages waiting in a queue.", labels=["queue"])
    mark = GaugeMetricFamily(
        "eventbus_queue_high_water_mark",
        "Depth above which sheddable events are dropped and critical ones held in the outbox.",
        labels=["queue"],
    )
    for name in queues.WORKER_QUEUES:
        depth.add_metric([name], depths[name])
        mark.add_metric([name], ops_api.high_water_mark(name))
    yield depth
    yield mark


def _families_redis() -> Iterator[Metric]:
    values = ops_api.counters_by_subscriber()
    for counter in ops_api.COUNTER_NAMES:
        family = CounterMetricFamily(f"eventbus_{counter}", COUNTER_HELP.get(counter, counter), labels=["subscriber"])
        for subscriber, by_name in values.items():
            family.add_metric([subscriber], by_name[counter])
        yield family

    histogram = HistogramMetricFamily(
        "eventbus_delivery_latency_seconds",
        "Seconds from an event's occurred_at to its subscriber's effect.",
        labels=["subscriber"],
    )
    for subscriber in values:
        h = ops_api.latency_histogram(subscriber)
        buckets = [(floatToGoString(bound), count) for bound, count in h.cumulative]
        histogram.add_metric([subscriber], buckets, sum_value=h.total)
    yield histogram

    breakers = GaugeMetricFamily(
        "eventbus_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", labels=["breaker"]
    )
    failures = GaugeMetricFamily(
        "eventbus_breaker_consecutive_failures", "Consecutive failures a breaker counted.", labels=["breaker"]
    )
    for breaker in ops_api.breaker_states():
        breakers.add_metric([breaker.name], BREAKER_STATE_VALUES[breaker.state])
        failures.add_metric([breaker.name], breaker.consecutive_failures)
    yield breakers
    yield failures

    grants = GaugeMetricFamily(
        "eventbus_rate_limiter_grants", "Grants in a rate limiter's current window.", labels=["limiter"]
    )
    limits = GaugeMetricFamily(
        "eventbus_rate_limiter_limit", "Grants a rate limiter allows per window.", labels=["limiter"]
    )
    for limiter in ops_api.limiter_states():
        if limiter.grants_in_window is not None and limiter.limit is not None:
            grants.add_metric([limiter.name], limiter.grants_in_window)
            limits.add_metric([limiter.name], limiter.limit)
    yield grants
    yield limits

    throttled = CounterMetricFamily(
        "telemetry_throttled",
        "429 answers of /api/v1/readings, by device and reason (rate: TELEMETRY_DEVICE_RATE; pressure: "
        "the telemetry queue above its high-water mark).",
        labels=["device", "reason"],
    )
    for (device, reason), count in sorted(throttled_counts().items()):
        throttled.add_metric([device, reason], count)
    yield throttled


SOURCES: dict[str, Callable[[], Iterable[Metric]]] = {
    "database": lambda: [*_families_outbox(), *_families_reconcile(), *_families_dead_letters()],
    "broker": lambda: list(_families_queues()),
    "redis": lambda: list(_families_redis()),
    "workers": lambda: list(metrics_workers.families()),
}
"""Each source is read whole before any of its families is sent: a failure leaves out all of them."""


class EventBusCollector(Collector):
    """Reads every source at scrape time; holds no state between scrapes."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "eventbus_metrics_source_up", "1 when the source could be read for this scrape, else 0.", labels=["source"]
        )
        for name, read in SOURCES.items():
            families = status.attempt(name, lambda read=read: list(read()), {})
            up.add_metric([name], 0 if families is None else 1)
            yield from families or ()
        yield up

    def describe(self) -> Iterable[Metric]:
        # Nothing to describe up front: the registry must not call collect() at registration.
        return []


FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
"""A request carrying one of these came through a proxy: its loopback address is the proxy's, not the client's."""


def access_mode() -> str:
    """What ``/metrics`` answers, in one line (logged at start)."""
    if settings.METRICS_TOKEN:
        return "/metrics asks for a bearer token (METRICS_TOKEN)"
    return "/metrics answers loopback clients only, not through a proxy (METRICS_TOKEN is empty)"


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the metrics, else the answer to send (401 or 403)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest: the time taken says nothing about how much of the token was right.
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        response = HttpResponse("a bearer token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if _is_loopback(request.META.get("REMOTE_ADDR", "")) and not any(h in request.headers for h in FORWARDING_HEADERS):
        return None
    return HttpResponse(
        "metrics are served to loopback clients only; set METRICS_TOKEN to scrape from elsewhere\n",
        status=403,
        content_type="text/plain",
    )


@csrf_exempt
@require_safe
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus's text format (or OpenMetrics when the scraper asks for it)."""
    refused = refusal(request)
    if refused is not None:
        return refused
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(EventBusCollector())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(collectors), content_type=content_type)
