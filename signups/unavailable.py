"""A sign-up the database cannot take now answers 503 with Retry-After and a page that says to try again.

The database is down, restarting, or locked beyond its wait (SQLite's busy
timeout, PostgreSQL's lock timeout): Django raises ``OperationalError`` (or
``InterfaceError`` for a connection that went away). That is a passing state
the person can do nothing about but wait, not a bug: a 500, or with
``DJANGO_DEBUG`` on a traceback, would say the opposite. Other database errors
(a ``ProgrammingError``, a ``DataError``) are bugs and stay 500s.

The page is rendered without the request's context: the context processors
would read the session and the user, from the database that just failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

log = logging.getLogger(__name__)

View = Callable[[HttpRequest], HttpResponse]

#: Seconds a client is asked to wait: a lock clears or a database restarts in
#: about that long, and a person reading the page takes as much to try again.
RETRY_AFTER = 10


def retry_later_when_the_database_is_unavailable(view: View) -> View:
    """Answer 503 with ``Retry-After`` instead of the view's 500 when the database cannot be used now."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        try:
            return view(request)
        except (OperationalError, InterfaceError) as exc:
            # One line: a driver's message may span several (psycopg's "Is the server running...").
            reason = " ".join(str(exc).split())[:300]
            log.warning("%s %s answered 503: the database is unavailable (%s)", request.method, request.path, reason)
            page = render_to_string("signups/try_again.html", {"retry_after": RETRY_AFTER})
            response = HttpResponse(page, status=503)
            response["Retry-After"] = str(RETRY_AFTER)
            return response

    return wrapper
