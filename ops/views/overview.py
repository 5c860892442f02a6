"""The ops overview, for staff: ``/ops/`` (HTML, refreshing itself) and ``/ops/overview.json``.

Both show ops.status.take_snapshot(), as ``manage.py eventbus_status`` does:
queues and their workers, the outbox, per-subscriber counters and dead
letters, breakers, rate limits and throughput; on the HTML page, each worker's
progress and whether it is stalled (alive, but no longer consuming). A source that cannot be read
shows "unavailable: <reason>"; the rest still renders. They need
``eventbus.view_outboxevent`` (ops/views/access.py says why): anonymous
visitors are sent to log in; logged-in users without it get 403.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ops import inflight, status
from ops.views.access import VIEW_DEAD_LETTERS, VIEW_EVENTS, allowed, permission_required
from ops.views.overview_tables import columns, counter_groups, throughput_chart

REFRESH_SECONDS = 5
"""How often the page fetches itself again; each snapshot costs about a second (the workers' answers)."""


@require_GET
@never_cache
@permission_required(VIEW_EVENTS)
def overview(request: HttpRequest) -> HttpResponse:
    snapshot = status.take_snapshot()
    problems: dict[str, str] = {}
    # Read only when the outbox could be: without a database it would fail the same way.
    under_way = status.attempt("under_way", inflight.deliveries_under_way, problems) if snapshot.reconcile else None
    failed = snapshot.unavailable.get("queues") or snapshot.unavailable.get("counters")
    if failed:
        # Without the depths (the broker) or Redis a verdict cannot be given, and asking again would only add
        # a second wait for the same failure to the page's time.
        progress, problems["progress"] = None, failed
    else:
        progress = status.attempt("progress", lambda: status.worker_health(snapshot), problems)
    return render(
        request,
        "ops/overview.html",
        {
            "snapshot": snapshot,
            "outbox_age": status.age(snapshot.outbox.oldest_age_seconds) if snapshot.outbox else None,
            "redeliver_after": status.age(settings.EVENTBUS_REDELIVER_AFTER),
            "under_way": under_way,
            "under_way_unavailable": problems.get("under_way", ""),
            "worker_health": progress,
            "worker_health_unavailable": problems.get("progress", ""),
            "stall_after": status.age(settings.EVENTBUS_STALL_AFTER),
            "subscriber_columns": columns(snapshot.subscribers),
            "counter_groups": counter_groups(
                snapshot.subscribers,
                snapshot.counter_names,
                link_dead_letters=allowed(request.user, VIEW_DEAD_LETTERS),
            ),
            "throughput_chart": throughput_chart(snapshot.throughput) if snapshot.throughput is not None else None,
            "refresh_seconds": REFRESH_SECONDS,
            "flower_url": settings.FLOWER_URL,
        },
    )


@require_GET
@never_cache
@permission_required(VIEW_EVENTS)
def overview_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(status.take_snapshot().to_dict())
