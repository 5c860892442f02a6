"""The sign-up commands. Each change and the event reporting it commit together."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Lower
from django.utils import timezone

from eventbus import publish
from signups.events import WEB, UserEmailVerified, UserSignedUp, VerificationRequested, aggregate_of
from signups.models import Account
from signups.verification import InvalidToken, VerificationClaim


class EmailTaken(Exception):
    """Somebody has already signed up with this address."""


def normalize_email(email: str) -> str:
    """One spelling per address: surrounding space dropped, compared case-insensitively."""
    return email.strip().lower()


def email_taken(email: str) -> bool:
    """Whether a user has this address as username or email, in any case.

    Filters on ``lower()`` of each column, which migration 0002 indexes (an
    ``__iexact`` lookup cannot use an index: LIKE on SQLite, UPPER() on PostgreSQL).
    """
    return users_with_address(email).exists()


def users_with_address(email: str) -> QuerySet[AbstractBaseUser]:
    """The users whose username or email is this address, in any case (see ``email_taken``)."""
    address = normalize_email(email)
    users = get_user_model().objects.alias(username_folded=Lower("username"), email_folded=Lower("email"))
    return users.filter(Q(username_folded=address) | Q(email_folded=address))


def sign_up(email: str, password: str, *, channel: str = WEB) -> AbstractBaseUser:
    """Create the user and publish ``user.signed_up``, in one transaction.

    ``channel`` says how the person signed up (signups/events.py): the form's
    view leaves it at WEB, ``manage.py seed_demo`` passes SEED.

    Raises EmailTaken when the address is in use, including when a concurrent
    sign-up with the same address commits first.
    """
    User = get_user_model()
    email = normalize_email(email)
    user = None
    try:
        with transaction.atomic():
            if email_taken(email):
                raise EmailTaken(email)
            # username is unique: it doubles as the case-folded email index.
            user = User.objects.create_user(username=email, email=email, password=password)
            Account.objects.create(user=user)
            publish(UserSignedUp(user_id=user.pk, channel=channel), aggregate=aggregate_of(user.pk))
    except IntegrityError as exc:
        if user is not None:
            raise  # the user's row went in: this is another table's failure (the outbox's), not the address
        raise EmailTaken(email) from exc
    return user


def verify_email(claim: VerificationClaim) -> bool:
    """Mark the address verified and publish ``user.email_verified``; False if it already was.

    The conditional UPDATE makes a second click (or two at once) publish nothing.
    """
    with transaction.atomic():
        account = Account.objects.select_related("user").filter(user_id=claim.user_id).first()
        if account is None or normalize_email(account.user.email) != normalize_email(claim.email):
            raise InvalidToken("This verification link does not match an account.")
        updated = Account.objects.filter(pk=account.pk, email_verified_at__isnull=True).update(
            email_verified_at=timezone.now()
        )
        if updated:
            publish(UserEmailVerified(user_id=claim.user_id), aggregate=aggregate_of(claim.user_id))
    return bool(updated)


def request_verification_email(email: str) -> int | None:
    """Publish ``user.verification_requested`` for the account with this address if it is not
    verified yet; the id of the user emailed, or None (no such account, or already verified).

    The caller answers the same either way (no account enumeration): the result
    is for tests and logs only.
    """
    with transaction.atomic():
        user = (
            users_with_address(email)
            .filter(account__email_verified_at__isnull=True)
            .order_by("pk")
            .values_list("pk", flat=True)
            .first()
        )
        if user is not None:
            publish(VerificationRequested(user_id=user), aggregate=aggregate_of(user))
    return user
