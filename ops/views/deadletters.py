"""Ops pages for staff: dead letters listed with filters, inspected, replayed (or dry-run) and purged.

Every action goes through ``eventbus.deadletters.operations``, as the command
and Django admin do, and asks the admin's permission for it
(ops/views/access.py): view to list and read, change to replay, delete to
purge. Anonymous visitors are sent to log in; logged-in users without the
permission get 403 and nothing is done.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from eventbus import ops_api
from eventbus.models import DeadLetter
from eventbus.ops_api import DeadLetterFilterForm, PurgeForm, ReplayForm, selected_ids
from ops.views.access import PURGE_DEAD_LETTERS, REPLAY_DEAD_LETTERS, VIEW_DEAD_LETTERS, permission_required

PAGE_SIZE = 50
# A dry run of hundreds would bury the page; the summary still counts them all.
MAX_REPORT_LINES = 20


@require_GET
@permission_required(VIEW_DEAD_LETTERS)
def dead_letter_list(request: HttpRequest) -> HttpResponse:
    form = DeadLetterFilterForm(request.GET or None)
    queryset = ops_api.filter_dead_letters(**form.filters()).annotate(replay_count=Count("replays"))
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "ops/deadletter_list.html",
        {
            "form": form,
            "page": page,
            "query": query.urlencode(),
            "replay_form": ReplayForm(),
            "purge_form": PurgeForm(),
        },
    )


@require_GET
@permission_required(VIEW_DEAD_LETTERS)
def dead_letter_detail(request: HttpRequest, pk: Any) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, pk=pk)
    return render(
        request,
        "ops/deadletter_detail.html",
        {
            "dl": dead_letter,
            "body_json": json.dumps(dead_letter.body, indent=2, sort_keys=True),
            "replays": dead_letter.replays.all(),
            "replay_form": ReplayForm(),
            "purge_form": PurgeForm(),
        },
    )


@require_POST
@permission_required(REPLAY_DEAD_LETTERS)
def dead_letter_replay(request: HttpRequest) -> HttpResponse:
    form = ReplayForm(request.POST)
    ids = selected_ids(request.POST.getlist("ids"))
    if not ids:
        messages.warning(request, "No dead letter selected.")
    elif not form.is_valid():
        messages.error(request, f"Not replayed: {form.errors.as_text()}")
    else:
        report = ops_api.replay_dead_letters(
            DeadLetter.objects.filter(pk__in=ids),
            by=request.user.get_username(),
            subscriber=form.cleaned_data["subscriber"] or None,
            dry_run=form.cleaned_data["dry_run"],
        )
        level = messages.WARNING if report.unsent or report.not_replayable else messages.SUCCESS
        messages.add_message(request, level, report.summary())
        lines = report.lines()
        for line in lines[:MAX_REPORT_LINES]:
            messages.info(request, line)
        if len(lines) > MAX_REPORT_LINES:
            messages.info(request, f"… and {len(lines) - MAX_REPORT_LINES} more")
    return _back(request)


@require_POST
@permission_required(PURGE_DEAD_LETTERS)
def dead_letter_purge(request: HttpRequest) -> HttpResponse:
    form = PurgeForm(request.POST)
    ids = selected_ids(request.POST.getlist("ids"))
    if not ids:
        messages.warning(request, "No dead letter selected.")
        return _back(request)
    if not form.is_valid():
        messages.error(request, "Not purged: tick the confirmation box to delete dead letters.")
        return _back(request)
    count = ops_api.purge_dead_letters(DeadLetter.objects.filter(pk__in=ids))
    messages.success(request, f"Purged {count} dead letter{'s' if count != 1 else ''}.")
    # The page it came from may be the detail of a row that no longer exists.
    return redirect("ops:deadletters")


def _back(request: HttpRequest) -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return HttpResponseRedirect(target)
    return redirect(reverse("ops:deadletters"))
