"""``/metrics``: the event bus in Prometheus's text format, read from its own records at scrape time.

The web process keeps no metric of its own: every value comes from what all
processes share (the outbox, the ledger and dead letters in the database;
counters, the latency histogram and breakers in Redis; queue depths from the
broker), read when Prometheus asks. So any web process answers for the whole
cluster, and a restart loses nothing. Workers online and task runtimes per
worker are Flower's (its own ``/metrics``).

A source that fails leaves its families out and sets
``eventbus_metrics_source_up{source=...}`` to 0, so a scrape still answers
when Redis or the broker is down.

Access: with ``METRICS_TOKEN`` set, a request must carry ``Authorization:
Bearer <token>`` (else 401); empty, the endpoint is open, for a Prometheus in
the same private network.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Iterator

from django.conf import settings
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from eventbus import backpressure, latency, registry
from eventbus.breaker import CLOSED, HALF_OPEN, OPEN
from eventbus.models import OutboxEvent
from ops import status
from project import queues
from telemetry.door import throttled_counts

BREAKER_STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

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


def _published_by_type() -> list[tuple[str, int, int]]:
    """(event type, rows in the outbox, rows dispatched), one grouped query."""
    rows = (
        OutboxEvent.objects.order_by()
        .values("type")
        .annotate(total=Count("id"), dispatched=Count("id", filter=Q(status=OutboxEvent.Status.DISPATCHED)))
    )
    return sorted((row["type"], row["total"], row["dispatched"]) for row in rows)


def _families_outbox() -> Iterator[Metric]:
    published = CounterMetricFamily(
        "eventbus_events_published", "Events written to the outbox, by type.", labels=["type"]
    )
    dispatched = CounterMetricFamily(
        "eventbus_events_dispatched",
        "Events handed to every subscriber's queue (outbox status dispatched), by type.",
        labels=["type"],
    )
    for event_type, total, done in _published_by_type():
        published.add_metric([event_type], total)
        dispatched.add_metric([event_type], done)
    outbox = status.outbox_status()
    yield published
    yield dispatched
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
    for name in sorted({s.name for s in registry.all_subscriptions()} | set(stored)):
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
        mark.add_metric([name], backpressure.high_water_mark(name))
    yield depth
    yield mark


def _families_redis() -> Iterator[Metric]:
    values = status.counter_values()
    for counter in status.COUNTER_NAMES:
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
        h = latency.histogram(subscriber)
        buckets = [(floatToGoString(bound), count) for bound, count in h.cumulative]
        histogram.add_metric([subscriber], buckets, sum_value=h.total)
    yield histogram

    breakers = GaugeMetricFamily(
        "eventbus_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", labels=["breaker"]
    )
    failures = GaugeMetricFamily(
        "eventbus_breaker_consecutive_failures", "Consecutive failures a breaker counted.", labels=["breaker"]
    )
    for breaker in status.breaker_states():
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
    for limiter in status.limiter_states():
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


def authorized(request: HttpRequest) -> bool:
    """True when METRICS_TOKEN is empty, or the request carries it as a bearer token."""
    token = settings.METRICS_TOKEN
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@csrf_exempt
@require_safe
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus's text format (or OpenMetrics when the scraper asks for it)."""
    if not authorized(request):
        response = HttpResponse("a bearer token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(EventBusCollector())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(collectors), content_type=content_type)
