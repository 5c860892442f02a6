"""A handler whose effect is outside the database holds no database lock while it waits on the network."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

from eventbus import counters
from eventbus.models import ProcessedEvent
from project import queues
from tests.conftest import running_worker, wait_for
from tests.factories import sign_up_via_client
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

EMAIL = "notifications.send_welcome_email"


@pytest.mark.skipif(
    django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
    reason="SQLite's database-wide write lock is what this is about; PostgreSQL locks rows",
)
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

            # when: another process writes, waiting at most 1 s for the lock
            other = sqlite3.connect(connection.settings_dict["NAME"], timeout=1.0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                # then: it got the lock at once: the send holds no transaction
                got_lock = True
            except sqlite3.OperationalError as exc:
                got_lock = "locked" not in str(exc)
            finally:
                other.close()
            assert got_lock, "the database's write lock was held during the SMTP conversation"

            # and the email still goes out once, its ledger entry written after it
            sink.latency = 0
            wait_for(lambda: ProcessedEvent.objects.filter(subscriber=EMAIL).exists(), timeout=20, what="the send")
    assert len(sink.messages) == 1
    assert not counters.read(counters.EFFECT_WAITS).get(EMAIL)
