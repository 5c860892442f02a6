"""Gives every request a correlation id, taken from ``X-Request-ID`` or made up.

The id goes into every event the request publishes and back on the response,
so one sign-up can be followed from the browser to the last worker.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from eventbus.observability.context import new_correlation_id, reset_correlation_id, set_correlation_id

HEADER = "X-Request-ID"
# A client-supplied id is echoed into logs and events: accept only a plain token.
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class CorrelationIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        supplied = request.headers.get(HEADER, "")
        correlation_id = supplied if _SAFE.match(supplied) else new_correlation_id()
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        token = set_correlation_id(correlation_id)
        try:
            response = self.get_response(request)
        finally:
            reset_correlation_id(token)
        response[HEADER] = correlation_id
        return response
