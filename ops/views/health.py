"""Probes for load balancers and orchestrators: ``/healthz`` (alive) and ``/readyz`` (ready to serve).

- ``/healthz``: 200 ``ok`` whenever the process answers a request. It touches
  neither the database nor the broker, so an outage of either never gets a
  healthy web process restarted.
- ``/readyz``: 200 when the database answers a trivial query and the broker
  accepts a connection, else 503; the JSON body names each check, ``"ok"`` or
  the error, e.g. ``{"database": "ok", "broker": "OperationalError: ..."}``.
  The broker check is bounded: one connection attempt and one retry, each
  within the broker's connect timeout (EVENTBUS_PUBLISH_TIMEOUT).

Both are open to anyone (they say nothing secret), exempt from CSRF, never
cached, and answer GET and HEAD.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from project.celery import app as celery_app

OK = "ok"


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    with celery_app.connection_for_read() as broker:
        broker.ensure_connection(
            max_retries=1,
            interval_start=0,
            interval_step=0.1,
            interval_max=0.1,
            timeout=2 * settings.EVENTBUS_PUBLISH_TIMEOUT + 0.5,
        )


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "broker": check_broker}


def run_checks() -> dict[str, str]:
    """Each check's name to ``"ok"`` or ``"<ExceptionType>: <message>"``; runs them all, raises nothing."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # a probe reports any failure; it must not turn into a 500
            results[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        else:
            results[name] = OK
    return results


@csrf_exempt
@require_safe
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")


@csrf_exempt
@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    results = run_checks()
    ready = all(value == OK for value in results.values())
    return JsonResponse(results, status=200 if ready else 503)
