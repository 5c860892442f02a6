"""Figure 4's baseline: the project's WSGI application with publishing off, for gunicorn.

``gunicorn bench.wsgi_nopublish:application`` serves the same app, whose
sign-up view calls ``sign_up_without_publishing`` instead of
``signups.services.sign_up``: the same checks and the same ``User`` and
``Account`` rows in one transaction, no outbox row, no dispatch. The app's
code is not changed; only the name the view looks up is replaced, in this
process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from project.wsgi import application  # sets Django up

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def sign_up_without_publishing(email: str, password: str) -> AbstractBaseUser:
    """``signups.services.sign_up`` minus its ``publish()`` call."""
    from django.contrib.auth import get_user_model
    from django.db import IntegrityError, transaction

    from signups.models import Account
    from signups.services import EmailTaken, email_taken, normalize_email

    User = get_user_model()
    email = normalize_email(email)
    try:
        with transaction.atomic():
            if email_taken(email):
                raise EmailTaken(email)
            user = User.objects.create_user(username=email, email=email, password=password)
            Account.objects.create(user=user)
    except IntegrityError as exc:
        raise EmailTaken(email) from exc
    return user


def _install() -> None:
    from signups import views

    views.sign_up = sign_up_without_publishing  # type: ignore[assignment]


_install()

__all__ = ["application", "sign_up_without_publishing"]
