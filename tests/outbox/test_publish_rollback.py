"""The outbox INSERT failing takes the producer's change down with it: no user without its event.

``publish`` writes its row with ``savepoint=False`` (eventbus/outbox/publish.py): a
failed write marks the caller's whole transaction for rollback, so even a
caller that catches the error cannot commit the change without its event.
The write is made to fail for real, by a trigger in the database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction

from eventbus.models import OutboxEvent
from eventbus.outbox.publish import publish
from signups.events import UserSignedUp, aggregate_of
from signups.models import Account
from signups.services import sign_up
from tests.factories import PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]

REFUSAL = "the outbox refuses this row"


@pytest.fixture
def outbox_refuses_inserts() -> Iterator[None]:
    """Every INSERT into the outbox table fails in the database itself, until the test ends."""
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION test_outbox_refuses() RETURNS trigger AS $$ "
                f"BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER test_outbox_refuses BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION test_outbox_refuses()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER test_outbox_refuses BEFORE INSERT ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER test_outbox_refuses ON {table}")
                cursor.execute("DROP FUNCTION test_outbox_refuses()")
            else:
                cursor.execute("DROP TRIGGER test_outbox_refuses")


def test_a_sign_up_whose_event_cannot_be_written_leaves_no_user(outbox_refuses_inserts: None) -> None:
    # when: the sign-up's outbox INSERT fails (an IntegrityError on SQLite, a DatabaseError on
    # PostgreSQL): the error goes to the caller as it is, never read as a taken address
    with pytest.raises(DatabaseError) as failure:
        sign_up("rollback@example.com", PASSWORD)
    assert REFUSAL in str(failure.value)

    # then: nothing of the sign-up was committed
    assert not get_user_model().objects.filter(email="rollback@example.com").exists()
    assert not Account.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_a_caller_that_swallows_the_outbox_error_still_cannot_commit_the_change(outbox_refuses_inserts: None) -> None:
    """With a savepoint around the outbox write, catching its error would commit the user alone."""
    User = get_user_model()
    # when: a producer catches publish's failure inside its transaction and carries on
    caught: list[Exception] = []
    with transaction.atomic():
        user = User.objects.create_user(username="swallow@example.com", email="swallow@example.com")
        try:
            publish(UserSignedUp(user_id=user.pk, channel="web"), aggregate=aggregate_of(user.pk))
        except DatabaseError as exc:
            caught.append(exc)
        doomed = transaction.get_connection().needs_rollback

    # then: the user was rolled back with the event
    assert caught and REFUSAL in str(caught[0])
    assert not User.objects.filter(username="swallow@example.com").exists(), "the user was committed alone"
    assert not OutboxEvent.objects.exists()
    # and: because the failed write doomed the caller's transaction, whatever the caller did next
    assert doomed
