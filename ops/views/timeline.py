"""Ops pages for staff: find events (one search box), and one event's whole story.

The assembly lives in ``ops.timeline``; these views only read the query,
paginate and render. Both show events and their payloads, so they need
``eventbus.view_outboxevent``, as the admin's outbox pages do: anonymous
visitors are sent to log in; logged-in users without it get 403.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ops import timeline
from ops.timeline.picture import picture
from ops.views.access import VIEW_EVENTS, permission_required

PAGE_SIZE = 50


@require_GET
@permission_required(VIEW_EVENTS)
def event_list(request: HttpRequest) -> HttpResponse:
    result = timeline.search(request.GET.get("q", ""))
    page = Paginator(result.events, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "ops/timeline_list.html",
        {"result": result, "page": page, "rows": timeline.rows(page.object_list), "query": query.urlencode()},
    )


@require_GET
@permission_required(VIEW_EVENTS)
def event_detail(request: HttpRequest, pk: Any) -> HttpResponse:
    story = timeline.build(pk)
    if story is None:
        raise Http404("no such event in the outbox")
    return render(request, "ops/timeline_detail.html", {"story": story, "picture": picture(story)})
