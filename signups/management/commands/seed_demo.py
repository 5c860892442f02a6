"""``manage.py seed_demo [N] [--verify-fraction F]``: sign up N demo users through the real code path.

Each user is made by ``signups.services.sign_up`` in a transaction of its
own, so each publishes ``user.signed_up`` exactly as a sign-up on the web
page does (outbox row, dispatch on commit; the relay sends what the broker
did not take), its ``channel`` saying ``seed`` instead of ``web``.
``--verify-fraction`` verifies that share of them through
``signups.services.verify_email``, with the claim read back from a real
verification token, which publishes ``user.email_verified``. Running workers
process all of it.

Addresses are ``demo-<random>@example.com``; each password is random, strong
and never printed or logged. Every event of one run carries the same request
id (``seed-<random>``), printed at the end, so the run can be found on the
events page.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from eventbus import ops_api, reset_correlation_id, set_correlation_id
from eventbus.management.progress import ProgressBar
from eventbus.models import OutboxEvent
from signups.events import SEED
from signups.services import EmailTaken, sign_up, verify_email
from signups.verification import make_token, read_token

DEFAULT_COUNT = 20
DOMAIN = "example.com"
# A collision of 48 random bits is unlikely; a few tries make it impossible in practice.
MAX_ATTEMPTS = 5


def demo_email() -> str:
    return f"demo-{secrets.token_hex(6)}@{DOMAIN}"


def new_password() -> str:
    """A strong random password (about 190 bits); nobody needs to know it."""
    return secrets.token_urlsafe(24)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"--verify-fraction takes a number from 0 to 1, not {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise CommandError(f"--verify-fraction takes a number from 0 to 1, not {value:g}")
    return value


class Command(BaseCommand):
    help = "Sign up N demo users (demo-…@example.com) through the real sign-up code; optionally verify some."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", nargs="?", type=int, default=DEFAULT_COUNT, help="how many (default 20)")
        parser.add_argument(
            "--verify-fraction",
            default="0",
            metavar="F",
            help="verify this share of them, from 0 to 1 (default 0), e.g. 0.5",
        )

    def handle(self, *args: Any, count: int, verify_fraction: str, **options: Any) -> None:
        if count < 0:
            raise CommandError("the count cannot be negative")
        fraction = _fraction(verify_fraction)
        request_id = f"seed-{secrets.token_hex(8)}"
        token = set_correlation_id(request_id)
        try:
            users = self._sign_up(count)
            verified = self._verify(users, fraction)
        finally:
            reset_correlation_id(token)
        self._summary(users, verified, request_id)

    def _sign_up(self, count: int) -> list[AbstractBaseUser]:
        users: list[AbstractBaseUser] = []
        with ProgressBar(count, label="signing up", stream=self.stdout) as bar:
            for _ in range(count):
                users.append(self._one_user())
                bar.advance()
            bar.finish(f"signed up {len(users)} demo user{'s' if len(users) != 1 else ''}")
        return users

    def _one_user(self) -> AbstractBaseUser:
        for _ in range(MAX_ATTEMPTS):
            try:
                # sign_up runs in its own transaction; the event is dispatched when it commits.
                return sign_up(demo_email(), new_password(), channel=SEED)
            except EmailTaken:
                continue
        raise CommandError(f"no free demo address after {MAX_ATTEMPTS} tries")

    def _verify(self, users: list[AbstractBaseUser], fraction: float) -> int:
        chosen = random.sample(users, round(len(users) * fraction))
        if not chosen:
            return 0
        verified = 0
        with ProgressBar(len(chosen), label="verifying", stream=self.stdout) as bar:
            for user in chosen:
                # The claim a click on the welcome email's link would carry.
                claim = read_token(make_token(user.pk, user.email))
                verified += verify_email(claim)
                bar.advance()
            bar.finish(f"verified {verified} of them")
        return verified

    def _summary(self, users: list[AbstractBaseUser], verified: int, request_id: str) -> None:
        ops_api.write_dispatched_marks()  # sent events read "dispatched" here, not at exit
        statuses = Counter(OutboxEvent.objects.filter(correlation_id=request_id).values_list("status", flat=True))
        published = sum(statuses.values())
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "none"
        self.stdout.write(f"users: {len(users)} signed up, {verified} verified")
        self.stdout.write(f"events published: {published} ({by_status})")
        if statuses.get(OutboxEvent.Status.PENDING):
            self.stdout.write("pending events wait for the broker; the relay sends them (manage.py relay_outbox)")
        self.stdout.write(f"request id: {request_id} (find the events at {reverse('ops:events')}?q={request_id})")
