"""Sign-up pages. The request does the sign-up and publishes; everything else happens afterwards."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from eventbus import ops_api
from signups import resend_limits
from signups.events import aggregate_of
from signups.forms import EMAIL_TAKEN_MESSAGE, ResendVerificationForm, SignUpForm
from signups.services import EmailTaken, request_verification_email, sign_up, verify_email
from signups.throttle import limit_signups_per_ip
from signups.unavailable import retry_later_when_the_database_is_unavailable
from signups.verification import InvalidToken, read_token

SESSION_KEY = "signups_user_id"


@require_http_methods(["GET", "POST"])
@limit_signups_per_ip
@retry_later_when_the_database_is_unavailable
def signup(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = sign_up(form.cleaned_data["email"], form.cleaned_data["password"])
        except EmailTaken:
            # Lost a race with a concurrent sign-up of the same address.
            form.add_error("email", EMAIL_TAKEN_MESSAGE)
        else:
            request.session[SESSION_KEY] = user.pk
            return redirect("signups:status")
    status_code = 400 if request.method == "POST" else 200
    # "Try signing in instead" comes with the sign-in page's link.
    email_taken = EMAIL_TAKEN_MESSAGE in form.errors.get("email", ())
    return render(request, "signups/signup.html", {"form": form, "email_taken": email_taken}, status=status_code)


def _status_context(request: HttpRequest) -> dict[str, object] | None:
    user_id = request.session.get(SESSION_KEY)
    if user_id is None:
        return None
    user = get_user_model().objects.select_related("account").filter(pk=user_id).first()
    if user is None:
        return None
    events = ops_api.event_statuses_for(aggregate_of(user.pk))
    return {
        "email": user.email,
        "verified": user.account.is_verified,
        "events": events,
        "complete": all(e.complete for e in events),
    }


@require_GET
def status(request: HttpRequest) -> HttpResponse:
    context = _status_context(request)
    if context is None:
        return redirect("signups:signup")
    return render(request, "signups/status.html", context)


@require_GET
def status_json(request: HttpRequest) -> JsonResponse:
    context = _status_context(request)
    if context is None:
        return JsonResponse({"error": "no sign-up in this session"}, status=404)
    return JsonResponse(
        {
            "verified": context["verified"],
            "complete": context["complete"],
            "events": [
                {
                    "id": e.event_id,
                    "type": e.type,
                    "sequence": e.sequence,
                    "deliveries": [
                        {"subscriber": d.subscriber, "label": d.label, "state": d.state, "text": d.text}
                        for d in e.deliveries
                    ],
                }
                for e in context["events"]  # type: ignore[attr-defined]
            ],
        }
    )


@require_GET
def verify(request: HttpRequest, token: str) -> HttpResponse:
    try:
        claim = read_token(token)
        newly_verified = verify_email(claim)
    except InvalidToken as exc:
        return render(request, "signups/verify_failed.html", {"reason": str(exc)}, status=400)
    request.session[SESSION_KEY] = claim.user_id
    return render(request, "signups/verified.html", {"newly_verified": newly_verified, "email": claim.email})


@require_http_methods(["GET", "POST"])
@retry_later_when_the_database_is_unavailable
def resend_verification(request: HttpRequest) -> HttpResponse:
    """Email a new verification link to an address, if an unverified account has it.

    The answer is the same page and status whether the address has an account,
    a verified one or none, and takes the same steps (both limits, one
    transaction); only the email differs (signups/resend_limits.py says why
    the per-address limit is silent too).
    """
    form = ResendVerificationForm(request.POST or None)
    if request.method == "POST":
        retry_after = resend_limits.client_wait(request)
        if retry_after:
            context = {"retry_after": retry_after}
            response = render(request, "signups/too_many_resends.html", context, status=429)
            response["Retry-After"] = str(retry_after)
            return response
        if form.is_valid():
            email = form.cleaned_data["email"]
            if resend_limits.address_allowed(email):
                request_verification_email(email)
            context = {"email": email, "minutes": resend_limits.address_interval_minutes()}
            return render(request, "signups/resend_sent.html", context)
    status_code = 400 if request.method == "POST" else 200
    return render(request, "signups/resend.html", {"form": form}, status=status_code)
