"""Dead-letter queue with replay: a poison message and a permanent failure are stored, inspected, replayed."""

from __future__ import annotations

from celery import current_app

from eventbus import ops_api
from eventbus.models import DeadLetter, DeadLetterReplay
from lab.narration import Verdict, check
from lab.stage import Stage
from notifications.subscribers import send_welcome_email
from project import queues

SUMMARY = "a poison message and a permanent failure (SMTP 550) land in the dead-letter store; replay sends one once"

WELCOME = send_welcome_email.name


def run(stage: Stage) -> Verdict:
    stage.worker("deadletter", queues.NOTIFICATIONS, queues.DEAD_LETTER, concurrency=2)

    # A message no code can read: it never reaches a handler, and never loops.
    current_app.send_task(WELCOME, args=({"greeting": "not an envelope"},), queue=queues.NOTIFICATIONS)
    stage.say(f"sent a poison message (no envelope) to {WELCOME}")
    # A failure no retry can fix: the provider says there is no such mailbox.
    stage.sink.handler.reject_containing = "bounce"
    stage.sign_up("bounce")
    stage.say("signed up bounce1@example.com; the provider answers 550 (mailbox unavailable) to it")
    stage.wait("two dead letters", lambda: DeadLetter.objects.count() >= 2)
    for dead in DeadLetter.objects.order_by("created_at"):
        stage.say(f"dead letter {dead.id}: kind {dead.kind}, attempts {dead.attempts}, queue {dead.queue}")
        stage.say(f"  reason: {dead.reason[:110]}")
    kinds = sorted(DeadLetter.objects.values_list("kind", flat=True))

    stage.sink.handler.reject_containing = None
    stage.say("the operator fixed the mailbox at the provider, and replays every dead letter")
    first = ops_api.replay_dead_letters(DeadLetter.objects.all(), by="demo")
    for line in first.lines():
        stage.say(f"  {line}")
    stage.say(first.summary())
    stage.wait("the replayed email", lambda: stage.ledger_rows(WELCOME) >= 1 and stage.emails() >= 1)
    second = ops_api.replay_dead_letters(DeadLetter.objects.all(), by="demo")
    stage.say(f"replayed again: {second.summary()}")
    stage.wait("the second replay skipped by the ledger", lambda: stage.counter(ops_api.DUPLICATES, WELCOME) >= 1)
    recorded = DeadLetterReplay.objects.count()
    return check(
        f"{len(kinds)} dead letters ({', '.join(kinds)}), replay: {len(first.sent)} sent, "
        f"{len(first.not_replayable)} not replayable; again: {len(second.no_ops)} no-op; "
        f"{recorded} replays recorded, {stage.emails()} email",
        kinds == ["permanent", "poison"],
        len(first.sent) == 1,
        len(first.not_replayable) == 1,
        len(second.no_ops) == 1,
        recorded == 2,
        stage.emails() == 1,
        stage.ledger_rows(WELCOME) == 1,
    )
