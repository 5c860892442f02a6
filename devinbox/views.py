"""The dev inbox: what the local SMTP sink received. Exists only while DEBUG is on."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from devinbox.mailbox import get_mail, list_mail


def _require_debug() -> None:
    if not settings.DEBUG:
        raise Http404("The dev inbox exists only with DJANGO_DEBUG on.")


@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    _require_debug()
    return render(request, "devinbox/list.html", {"mails": list_mail(settings.DEVINBOX_DIR)})


@require_GET
def message(request: HttpRequest, name: str) -> HttpResponse:
    _require_debug()
    mail = get_mail(settings.DEVINBOX_DIR, name)
    if mail is None:
        raise Http404("No such message.")
    return render(request, "devinbox/message.html", {"mail": mail})
