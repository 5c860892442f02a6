"""What the event bus keeps in the database: the outbox, per-aggregate sequences and the ledger."""

from __future__ import annotations

import uuid

from django.db import models


class OutboxEvent(models.Model):
    """An event written in the producer's transaction; sent to the broker after commit.

    A row is ``pending`` until every subscriber's message was handed to the
    broker, then ``dispatched``. The relay sends pending rows that the
    on-commit dispatch could not (broker down, process killed after commit).
    A row is ``deferred`` while a critical subscriber's queue is above its
    high-water mark: ``deferred_subscribers`` names who still waits for it,
    and the relay sends it to them once the queue drains.

    ``sent_to`` names the subscribers whose messages the broker took: the
    deliveries this event is owed. The reconciler (eventbus/operations/reconcile.py)
    checks each against the ledger and the dead letters once the row's
    ``last_sent_at`` is old enough, sends again what has no end, and marks the
    row ``settled_at`` once every delivery has one.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        DEFERRED = "deferred", "deferred"
        DISPATCHED = "dispatched", "dispatched"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=100, db_index=True)
    version = models.PositiveIntegerField()
    aggregate = models.CharField(max_length=200)
    sequence = models.PositiveBigIntegerField()
    occurred_at = models.DateTimeField()
    correlation_id = models.CharField(max_length=100, blank=True, db_index=True)
    causation_id = models.CharField(max_length=100, blank=True, null=True)  # noqa: DJ001 -- the envelope says null, not ""
    payload = models.JSONField()

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatch_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    deferred_subscribers = models.JSONField(default=list, blank=True)
    # A relay claims a row by writing its own token and a deadline; a relay
    # that dies releases its rows when the deadline passes.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Written in the same UPDATE as the dispatched mark: no statement of its own.
    sent_to = models.JSONField(default=list, blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    redeliveries = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            # Its unique index also serves the per-aggregate lookups (ordering, the ops pages): a
            # second index on the same columns, which 0001 made, only cost every INSERT a B-tree.
            models.UniqueConstraint(fields=["aggregate", "sequence"], name="outbox_unique_aggregate_sequence"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="outbox_status_created"),
            # The reconciler's scan: sent, not yet settled, oldest first. Partial, so
            # that settled rows (nearly all of them) cost the index nothing.
            models.Index(
                fields=["last_sent_at", "id"],
                name="outbox_unsettled",
                condition=models.Q(settled_at__isnull=True, last_sent_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.aggregate}#{self.sequence} ({self.status})"

    def to_wire(self) -> dict[str, object]:
        """The envelope's JSON form, as it was published."""
        return {
            "id": str(self.id),
            "type": self.type,
            "version": self.version,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "aggregate": self.aggregate,
            "sequence": self.sequence,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "payload": self.payload,
        }


class AggregateSequence(models.Model):
    """The last sequence number handed out per aggregate.

    Incremented inside the producer's transaction: the row lock orders
    concurrent publishers of one aggregate, and a rollback gives the number back.
    """

    aggregate = models.CharField(max_length=200, primary_key=True)
    last_sequence = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.aggregate}: {self.last_sequence}"


class ProcessedEvent(models.Model):
    """The ledger: one row per (event, subscriber) whose effect has happened.

    A consumer writes it in the same transaction as its database effects, so a
    redelivered message finds it and does nothing: delivery is at least once,
    the effect happens once.
    """

    class Outcome(models.TextChoices):
        PROCESSED = "processed", "processed"
        SHED = "shed", "shed under load"

    event_id = models.UUIDField()
    subscriber = models.CharField(max_length=150)
    # "shed": dispatch dropped the event for this sheddable subscriber under
    # load. It still counts as handled, so ordering does not wait on it.
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.PROCESSED)
    event_type = models.CharField(max_length=100)
    aggregate = models.CharField(max_length=200, db_index=True)
    sequence = models.PositiveBigIntegerField()
    processed_at = models.DateTimeField(auto_now_add=True)
    task_id = models.CharField(max_length=255, blank=True)
    # Where and how long: the worker that did it, and the handler's run time.
    worker = models.CharField(max_length=255, blank=True)
    runtime_ms = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event_id", "subscriber"], name="ledger_unique_event_subscriber"),
        ]
        indexes = [models.Index(fields=["processed_at"], name="ledger_processed_at")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} by {self.subscriber}"


class DeliveryStep(models.Model):
    """A step on an event's way to one subscriber that the ledger alone does not show.

    The usual path (queued, then done) is read from the outbox and the ledger;
    the steps worth a row of their own are the unusual ones: a retry, a wait
    for a rate-limit token, an open breaker or an earlier event, shedding,
    deferral, a duplicate or stale delivery, a dead letter, a replay. Together
    they make the event's timeline, which survives restarts (Flower's does not).
    """

    class Step(models.TextChoices):
        RETRIED = "retried", "retried"
        WAITING = "waiting", "waiting"
        SHED = "shed", "shed"
        DEFERRED = "deferred", "deferred"
        DUPLICATE = "duplicate", "duplicate skipped"
        STALE = "stale", "stale, ignored"
        DEAD_LETTERED = "dead_lettered", "dead-lettered"
        REPLAYED = "replayed", "replayed"
        REDELIVERED = "redelivered", "redelivered by the reconciler"

    event_id = models.UUIDField(db_index=True)
    subscriber = models.CharField(max_length=150)
    step = models.CharField(max_length=20, choices=Step.choices)
    detail = models.TextField(blank=True)
    task_id = models.CharField(max_length=255, blank=True, db_index=True)
    worker = models.CharField(max_length=255, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.subscriber}: {self.step}"


class BrokerMarker(models.Model):
    """The token last written into the broker's Redis, kept here to tell whether Redis kept it.

    Rotated at every check (eventbus/operations/brokerwatch.py): a Redis that restarted
    empty, was flushed, or failed over to a replica that missed the last
    writes no longer holds the token this row names.
    """

    name = models.CharField(max_length=100, primary_key=True)
    token = models.CharField(max_length=64)
    written_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.token} at {self.written_at:%Y-%m-%d %H:%M:%S}"


class BrokerLoss(models.Model):
    """A time the broker was found to have lost its data, and what the reconciler did about it."""

    detected_at = models.DateTimeField(auto_now_add=True, db_index=True)
    reason = models.TextField()
    recovered_at = models.DateTimeField(null=True, blank=True)
    """When the reconciler had checked every event sent before the loss."""
    redelivered = models.PositiveIntegerField(default=0)
    """Deliveries sent again because of this loss."""

    class Meta:
        ordering = ["-detected_at"]
        # Django's default plural would add an "s" to "loss".
        verbose_name_plural = "broker losses"

    def __str__(self) -> str:
        return f"broker loss at {self.detected_at:%Y-%m-%d %H:%M:%S}: {self.reason}"


# --- Dead letters -------------------------------------------------------------

from eventbus.deadletters.failure import Kind as DeadLetterKind  # noqa: E402 -- dead-letter models start here


class DeadLetter(models.Model):
    """A message that failed for good, with its envelope and its failure; kept until purged.

    The id is derived from the failed delivery (see ``DeadLetterFailure.id``),
    so storing the same failure twice keeps one row. ``body`` is the envelope
    when the message was JSON; otherwise ``raw_body`` holds the bytes as text.
    A body over ``EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES`` is cut: ``raw_body``
    holds its first bytes, ``body_length`` and ``body_sha256`` describe the whole.
    """

    Kind = models.TextChoices("Kind", [(k.name, (k.value, k.value.replace("_", " "))) for k in DeadLetterKind])

    id = models.UUIDField(primary_key=True, editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    event_id = models.UUIDField(null=True, blank=True)
    event_type = models.CharField(max_length=100, blank=True)
    subscriber = models.CharField(max_length=150, blank=True)
    task_name = models.CharField(max_length=200, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    queue = models.CharField(max_length=100, blank=True)
    body = models.JSONField(null=True, blank=True)
    raw_body = models.TextField(blank=True)
    # Set only when the body was bigger than EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES:
    # raw_body then holds its first bytes (a preview) and body is null.
    body_length = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Set when the body was cut: the whole body's length in bytes."
    )
    body_sha256 = models.CharField(
        max_length=64, blank=True, help_text="Set when the body was cut: the sha256 (hex) of the whole body."
    )
    exception_type = models.CharField(max_length=255, blank=True)
    exception_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    first_failed_at = models.DateTimeField(null=True, blank=True)
    last_failed_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_failed_at"]
        indexes = [
            # One per list filter, each with the age that every list sorts and filters by.
            models.Index(fields=["last_failed_at"], name="deadletter_last_failed"),
            models.Index(fields=["subscriber", "last_failed_at"], name="deadletter_subscriber"),
            models.Index(fields=["event_type", "last_failed_at"], name="deadletter_event_type"),
            models.Index(fields=["kind", "last_failed_at"], name="deadletter_kind"),
            models.Index(fields=["event_id"], name="deadletter_event_id"),
            models.Index(fields=["task_id"], name="deadletter_task_id"),
        ]

    def __str__(self) -> str:
        who = self.subscriber or self.task_name or self.queue
        return f"{self.kind} {self.event_type or 'unknown event'} for {who or 'unknown subscriber'}"

    @property
    def reason(self) -> str:
        return f"{self.exception_type}: {self.exception_message}" if self.exception_type else self.exception_message

    @property
    def body_truncated(self) -> bool:
        """Cut when stored: ``raw_body`` is a preview; ``body_length`` and ``body_sha256`` describe the whole."""
        return self.body_length is not None


class DeadLetterReplay(models.Model):
    """One replay of a dead letter: who sent it again, when, and as which task."""

    dead_letter = models.ForeignKey(DeadLetter, on_delete=models.CASCADE, related_name="replays")
    replayed_by = models.CharField(max_length=150)
    replayed_at = models.DateTimeField(auto_now_add=True)
    subscriber = models.CharField(max_length=150)
    task_id = models.CharField(max_length=255)
    skipped_by_ledger = models.BooleanField(
        default=False,
        help_text="The ledger already held this (event, subscriber) when it was replayed: the consumer skips it.",
    )

    class Meta:
        ordering = ["-replayed_at"]

    def __str__(self) -> str:
        return f"replay of {self.dead_letter_id} by {self.replayed_by} at {self.replayed_at:%Y-%m-%d %H:%M:%S}"
