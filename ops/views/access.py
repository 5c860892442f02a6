"""Who may see and do what on the ops pages: the same model permissions as Django admin.

An ops page is a second door to the rows the admin shows, so it asks what
the admin asks: a staff account and the model permission for what the page
shows or does. Being staff alone opens nothing (a staff user without
permissions gets 403 here as in the admin); a superuser has every
permission.

| page or action | permission |
| --- | --- |
| ``/ops/deadletters/`` and a dead letter's page | ``eventbus.view_deadletter`` |
| replay (and its dry run) | ``eventbus.change_deadletter`` |
| purge | ``eventbus.delete_deadletter`` |
| ``/ops/events/`` and an event's timeline (payloads included) | ``eventbus.view_outboxevent`` |
| ``/ops/`` and ``/ops/overview.json`` (outbox, queues, counters) | ``eventbus.view_outboxevent`` |

The overview shows counts, not rows, and most of them are about the outbox
and the deliveries it owes; its dead-letter link is shown only to those who
may follow it.

Anonymous visitors are sent to the login page; a logged-in user who is not
staff or lacks the permission gets 403, never a redirect (a logged-in user
sent to log in again would loop).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

View = Callable[..., HttpResponse]

VIEW_DEAD_LETTERS = "eventbus.view_deadletter"
REPLAY_DEAD_LETTERS = "eventbus.change_deadletter"
PURGE_DEAD_LETTERS = "eventbus.delete_deadletter"
VIEW_EVENTS = "eventbus.view_outboxevent"


def allowed(user: Any, permission: str) -> bool:
    """What Django admin would say: an active staff account holding ``permission`` (a superuser holds all)."""
    return bool(user.is_active and user.is_staff and user.has_perm(permission))


def permission_required(permission: str) -> Callable[[View], View]:
    """Anonymous: redirect to the login page. Logged in but not staff, or without ``permission``: 403."""

    def decorate(view: View) -> View:
        @login_required
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not allowed(request.user, permission):
                raise PermissionDenied(f"needs a staff account with the permission {permission}")
            return view(request, *args, **kwargs)

        return guarded

    return decorate
