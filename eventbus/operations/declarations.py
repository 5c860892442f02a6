"""A worker's queues checked against what RabbitMQ already holds, before it consumes.

RabbitMQ never changes a queue's or an exchange's type or arguments in place:
a worker started with ``EVENTBUS_QUEUE_TYPE=quorum`` on classic queues (or the
other way round) would fail in its consumer with a bare channel error. Run at
``worker_init`` (eventbus/signals.py), these turn that into a refusal that says
what to do. Unlike eventbus/operations/checks.py, they ask the broker.
"""

from __future__ import annotations

import contextlib
from typing import Any

from eventbus.operations.checks import AMQP_SCHEMES


def declaration_problems(app: Any) -> list[str]:
    """Queues and exchanges on RabbitMQ whose type or arguments differ from what this worker declares.

    RabbitMQ answers PRECONDITION_FAILED to a declaration that differs from the existing one
    (a classic queue declared again as quorum, a direct exchange as topic) and never changes
    one in place; the worker's consumer would fail on it with a bare channel error. Declaring
    here first (idempotent when they match) turns that into a refusal saying what to do. A
    broker that cannot be reached is not a problem here: the worker waits for it as usual.
    """
    if not str(app.conf.broker_url).startswith(AMQP_SCHEMES):
        return []
    from amqp.exceptions import PreconditionFailed
    from kombu.exceptions import OperationalError

    found: list[str] = []
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            for queue in app.amqp.queues.values():
                channel = connection.channel()
                try:
                    queue.bind(channel).declare()
                except PreconditionFailed as exc:
                    found.append(
                        f"queue {queue.name!r}: RabbitMQ refused its declaration ({exc.reply_text}). RabbitMQ "
                        "cannot change a queue's or an exchange's type in place: set EVENTBUS_QUEUE_TYPE back to "
                        f"what it was, or drain {queue.name!r}, delete the queue and its exchange "
                        f"(rabbitmqctl -p <vhost> delete_queue {queue.name}; rabbitmqadmin -V <vhost> delete "
                        f"exchange name={queue.name}) and start the worker again, or use a new vhost in "
                        "CELERY_BROKER_URL"
                    )
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
    except (OperationalError, OSError):
        return found
    return found


def refuse_mismatched_declarations(app: Any) -> None:
    """Exit a worker whose queues RabbitMQ holds with another type or other arguments (``declaration_problems``)."""
    found = declaration_problems(app)
    if found:
        raise SystemExit("refusing to start: queues differ on the broker\n  - " + "\n  - ".join(found))
