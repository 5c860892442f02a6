"""The failure panel's actions, on /ops/ with DJANGO_DEBUG on: failures a person causes, to watch them heal.

- ``POST /ops/failures/provider/`` (``seconds``): the email provider (the dev
  SMTP sink) answers 451 for that long: retries with backoff, the breaker
  opening, its probe closing it once the window ends.
- ``POST /ops/failures/queue/`` (``queue``, ``seconds``): that queue's workers
  stop consuming for that long, and come back on their own.
- ``POST /ops/failures/flood/`` (``count``): that many analytics-only events at
  once, past the analytics queue's high-water mark: shedding (and, with the
  notifications queue above its own mark, deferring).
- ``POST /ops/failures/heal/``: the provider back and every paused queue
  consumed again, now.

The logic is devinbox's (faults.py, queuepause.py, flood.py); these views
check, act and redirect to the panel with a message saying what is under way
and where to watch it. Each needs CAUSE_FAILURES (as the ops actions in
ops/views/access.py need theirs: anonymous visitors are sent to log in, others
get 403) and a CSRF token. With DJANGO_DEBUG off every one answers 404 to a user
who has it, and the panel (ops/templates/ops/_failures.html) is not shown.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.urls import reverse
from django.views.decorators.http import require_POST

from devinbox import faults, flood, queuepause
from devinbox.tasks import flood_analytics
from ops.views.access import View, permission_required
from project import queues

CAUSE_FAILURES = "eventbus.change_outboxevent"
"""Causing failures changes what happens to the system's deliveries: the outbox's change permission."""
DEFAULT_SECONDS = 60


def debug_only(view: View) -> View:
    """404 with DJANGO_DEBUG off, before the request itself is looked at."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.DEBUG:
            raise Http404("The failure panel exists only with DJANGO_DEBUG on.")
        return view(request, *args, **kwargs)

    return guarded


def panel_action(view: Callable[[HttpRequest], str]) -> View:
    """CAUSE_FAILURES, then DEBUG only, then POST only; ``view`` returns the message, or raises ValueError with one.

    The permission comes first, as on every ops page: an anonymous visitor is
    sent to sign in and a user without it gets 403 whether DEBUG is on or not,
    so the guard reads the same everywhere (tests/project/test_security.py).
    """

    @permission_required(CAUSE_FAILURES)
    @debug_only
    @require_POST
    @wraps(view)
    def act(request: HttpRequest) -> HttpResponse:
        try:
            messages.success(request, view(request))
        except ValueError as exc:
            messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("ops:overview") + "#failures")

    return act


def number(data: QueryDict, name: str, default: int) -> int:
    raw = data.get(name, "").strip() or str(default)
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number, not {raw!r}")
    return int(raw)


@panel_action
def provider_down(request: HttpRequest) -> str:
    seconds = faults.take_provider_down(number(request.POST, "seconds", DEFAULT_SECONDS))
    return (
        f"The email provider refuses every email (451) for {seconds} s. Sign up: the welcome email is retried "
        "with backoff (its timeline), the breaker opens (below) and its probe closes it when the time is up."
    )


@panel_action
def pause_queue(request: HttpRequest) -> str:
    queue = request.POST.get("queue", "")
    if queue not in queuepause.PAUSABLE:
        raise ValueError(f"choose one of {', '.join(queuepause.PAUSABLE)}")
    try:
        seconds, workers = queuepause.pause(queue, number(request.POST, "seconds", DEFAULT_SECONDS))
    except queuepause.NothingToPause as exc:
        raise ValueError(str(exc)) from None
    return (
        f"{', '.join(workers)} stopped consuming {queue} for {seconds} s: its depth grows below, "
        "and it drains when they come back on their own."
    )


@panel_action
def flood_queue(request: HttpRequest) -> str:
    count = flood.bounded(number(request.POST, "count", flood.default_count()))
    request_id = flood.new_request_id()
    flood_analytics.apply_async((count, request_id), queue=queues.EVENTBUS)
    return (
        f"A flood of {count} analytics events is on its way (request id {request_id}): the analytics workers "
        f"pause for {flood.FLOOD_HOLD_SECONDS} s, the queue crosses its mark and the rest is shed (counted below)."
    )


@panel_action
def heal(request: HttpRequest) -> str:
    faults.bring_provider_back()
    resumed = list(queuepause.paused())
    for queue in resumed:
        queuepause.resume(queue)
    return "The email provider takes mail again" + (f"; consuming again: {', '.join(resumed)}." if resumed else ".")
