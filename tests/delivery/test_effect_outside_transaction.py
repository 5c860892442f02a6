"""A handler whose effect is outside the database holds no database lock while it waits on the network."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from django.db import connection

from eventbus.models import ProcessedEvent
from eventbus.observability import counters
from project import queues
from tests.conftest import running_worker, wait_for
from tests.factories import sign_up_via_client
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

EMAIL = "notifications.send_welcome_email"


def held_by_others() -> str | None:
    """What another connection holds of the database right now, or None: the test's view of the
    worker's connection, without asking the worker."""
    if connection.vendor == "sqlite":
        # SQLite's one write lock for the whole database: another process must get it at once.
        other = sqlite3.connect(connection.settings_dict["NAME"], timeout=1.0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                return f"the database's write lock ({exc})"
            raise
        finally:
            other.close()
        return None
    # PostgreSQL locks rows, not the database: what a send must not hold is an open transaction
    # (its row locks, its snapshot keeping VACUUM back, its connection pinned). Any other client
    # session of this database with a transaction under way is one.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, xact_start FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        )
        open_transactions = cursor.fetchall()
    return f"open transactions: {open_transactions}" if open_transactions else None


def test_the_database_stays_writable_while_a_welcome_email_waits_on_a_slow_provider(
    broker: None, settings: Any, client: Any
) -> None:
    with ProviderSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        sink.latency = 6.0
        with running_worker(queues.NOTIFICATIONS):
            # given: a welcome email in the middle of a slow SMTP conversation
            sign_up_via_client(client)
            wait_for(lambda: sink.handler.waiting, what="the send waiting on the provider")

            # then: the worker holds nothing of the database meanwhile (SQLite: its write lock,
            # PostgreSQL: an open transaction)
            held = held_by_others()
            assert sink.handler.waiting, "the send ended before the database was looked at"
            assert held is None, f"held during the SMTP conversation: {held}"

            # and the email still goes out once, its ledger entry written after it
            sink.latency = 0
            wait_for(lambda: ProcessedEvent.objects.filter(subscriber=EMAIL).exists(), timeout=20, what="the send")
    assert len(sink.messages) == 1
    assert not counters.read(counters.EFFECT_WAITS).get(EMAIL)
