"""Many events' task messages at once, each the message ``task.apply_async`` sends, for less.

Per message, ``apply_async`` merges the task's options, asks the router,
reads a dozen settings and writes the arguments' repr; kombu's Redis
transport then makes a new client and one round trip for the message and
another for its ``task-sent`` event. A ``Batch`` instead:

- works out each subscriber's options once (task options, router, settings,
  the running task as parent), as ``Task.apply_async`` and
  ``Celery.send_task`` would for that call;
- writes the arguments' repr once per event (every subscriber of an event
  gets the same arguments);
- still builds each message with Celery's ``app.amqp.create_task_message``
  and sends it with ``app.amqp.send_task_message``: the same headers, body
  and properties, the ``before_task_publish`` signal (which adds the
  ``x_correlation_id`` header, eventbus/observability/tracing.py) and the ``task-sent``
  event when CELERY_TASK_SEND_SENT_EVENT is on;
- publishes inside kombu's ``Producer.batch()``: on Redis the LPUSHes and the
  events' PUBLISHes wait in one pipeline, sent in one round trip by
  ``flush()``. Transports without batch support (RabbitMQ: publishing is
  asynchronous there already) publish each message at once, as before.

Until ``flush()`` returns, the broker may not hold a message ``add()`` took:
the caller marks nothing sent before it. A failed flush is ambiguous (some of
its commands may have run): the caller treats all of its messages as unsent,
and the consumers' ledger absorbs the duplicates a retry may make.

A task this path does not mirror (an ``expires``, its own ``apply_async`` or
``shadow_name``) goes through ``apply_async`` inside the same batch.

Buys: figure Pa, 1.42x -> 0.86x (two full runs bracketing the batched sends) and figure 3's relay;
lever 9 adds less than a full run's spread (docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.app.task import Task
from celery.utils.quorum_queues import detect_quorum_queues
from celery.utils.saferepr import saferepr
from django.conf import settings
from kombu import pools
from kombu.exceptions import BatchPublishError
from kombu.utils.uuid import uuid

from eventbus.celery_settings import broker_countdown

if TYPE_CHECKING:
    from eventbus.contract.registry import Subscription

#: Routes of calls made outside a worker's task, per app and (task, queue): they never change.
_SHARED_ROUTES: dict[tuple[Celery, str], tuple[dict[str, Any], _Route]] = {}

#: Far above what one flush buffers: flushing is the caller's decision, never kombu's on its own.
_UNBOUNDED = 1 << 30


@dataclass(frozen=True)
class _Route:
    """What ``apply_async(args=..., queue=q, routing_key=q, retry=False)`` settles for a task before the message."""

    name: str
    options: dict[str, Any]
    time_limit: float | None
    soft_time_limit: float | None
    ignore_result: bool
    plain: bool
    """Send with ``apply_async`` (options this path does not mirror)."""


class Batch:
    """Task messages for many (subscriber, event) pairs, published over one producer in few round trips."""

    def __init__(self, app: Celery, producer: Any, kombu_batch: Any) -> None:
        self.app = app
        self.producer = producer
        self._kombu_batch = kombu_batch
        self._routes: dict[str, _Route] = {}
        self._unflushed: Counter[str] = Counter()
        # As kombu decides (messaging._ProducerBatchState): does this channel hold messages until a flush?
        channel = producer.channel
        self.buffers = getattr(channel, "create_publish_batch", None) is not None and bool(
            getattr(channel, "supports_batch_publish", True)
        )
        self._send_sent_event, self._inherit_priority, self._repr_levels, self._args_max, self._kwargsrepr = _settings(
            app
        )
        self._reply_to = app.thread_oid
        # Inside a worker's task (the relay run by beat), the messages are its children.
        parent = app.current_worker_task
        self._parent = parent
        self._root_id = (parent.request.root_id or parent.request.id) if parent else None
        self._parent_id = parent.request.id if parent else None
        self._create = app.amqp.create_task_message
        self._send = app.amqp.send_task_message
        # Quorum queues (eventbus/celery_settings.py): a countdown must go through send_task, which routes
        # it to the broker's delayed-delivery exchanges; this path would put it in the worker's memory.
        self._native_delays = detect_quorum_queues(app, producer.connection.transport.driver_type)[0]

    def _route(self, task: Task, queue: str) -> _Route:
        name = task.name  # read once: each read through shared_task's proxy looks the task up again
        key = f"{name}\x00{queue}"
        route = self._routes.get(key)
        if route is not None:
            return route
        task = self.app.tasks[name]  # the task itself, not shared_task's proxy
        exec_options = task._get_exec_options()
        # Outside a worker's task (a request's dispatch) nothing in a route
        # depends on the call: it is worked out once per process, not per
        # event, for as long as the task's options are the same (Celery
        # caches them per task; a changed option means a new cache).
        shared = (self.app, key) if self._parent is None else None
        cached = _SHARED_ROUTES.get(shared) if shared is not None else None
        if cached is not None and cached[0] is exec_options:
            self._routes[key] = cached[1]
            return cached[1]
        # Task.apply_async: the task's options under the call's.
        options: dict[str, Any] = dict(exec_options, queue=queue, routing_key=queue, retry=False)
        options.setdefault("ignore_result", task.ignore_result)
        kind = type(task)
        plain = (
            options.get("expires") is not None
            or kind.apply_async is not Task.apply_async
            or kind.shadow_name is not Task.shadow_name
        )
        # Celery.send_task: these travel as arguments of the message, not as publish options.
        time_limit = options.pop("time_limit", None)
        soft_time_limit = options.pop("soft_time_limit", None)
        options.pop("expires", None)
        ignore_result = bool(options.pop("ignore_result", None))
        # The project's router routes by name; the call's queue wins over it anyway.
        options = self.app.amqp.router.route(options, task.name, (), {}, task)
        if self._parent is not None and self._inherit_priority:
            options.setdefault("priority", self._parent.request.delivery_info.get("priority"))
        route = _Route(task.name, options, time_limit, soft_time_limit, ignore_result, plain)
        self._routes[key] = route
        if shared is not None:
            _SHARED_ROUTES[shared] = (exec_options, route)
        return route

    def args_repr(self, args: tuple[Any, ...]) -> str:
        """The ``argsrepr`` header Celery writes for ``args``; make it once, pass it to every ``add``."""
        return saferepr(args, self._args_max, maxlevels=self._repr_levels)

    def add(
        self,
        subscription: Subscription,
        args: tuple[Any, ...],
        argsrepr: str | None = None,
        countdown: float | None = None,
    ) -> str:
        """Publish (on Redis: buffer) ``subscription``'s task message with ``args``; returns the task id.

        ``countdown``: the task runs no sooner than this many seconds from now.
        """
        task = subscription.task
        route = self._route(task, subscription.queue)
        if self.buffers:
            self._unflushed[subscription.queue] += 1
        if countdown and self._native_delays:
            countdown = broker_countdown(countdown, "quorum")
        if route.plain or (countdown and self._native_delays):
            result = task.apply_async(
                args=args,
                queue=subscription.queue,
                routing_key=subscription.queue,
                producer=self.producer,
                retry=False,
                add_to_parent=False,
                countdown=countdown,
            )
            return str(result.id)
        task_id = uuid()
        message = self._create(
            task_id,
            route.name,
            args,
            {},
            time_limit=route.time_limit,
            soft_time_limit=route.soft_time_limit,
            create_sent_event=self._send_sent_event,
            reply_to=self._reply_to,
            root_id=self._root_id,
            parent_id=self._parent_id,
            ignore_result=route.ignore_result,
            argsrepr=self.args_repr(args) if argsrepr is None else argsrepr,
            kwargsrepr=self._kwargsrepr,
            countdown=countdown,
            **route.options,
        )
        producer = self.producer
        with producer.connection._reraise_as_library_errors():
            if not route.ignore_result:
                self.app.backend.on_task_call(producer, task_id)
            self._send(producer, route.name, message, **route.options)
        return task_id

    def unflushed(self, queue: str) -> int:
        """Messages for ``queue`` added since the last flush, which the broker's depth does not count yet
        (always 0 where each message is published at once)."""
        return self._unflushed[queue]

    def flush(self) -> None:
        """Hand every message added so far to the broker; raises if it did not take them all."""
        try:
            with self.producer.connection._reraise_as_library_errors():
                self._kombu_batch.flush()
        except BatchPublishError as exc:
            # Name the broker's error, not only kombu's "delivery is uncertain".
            cause = exc.__cause__
            raise BatchPublishError(f"{exc}: {type(cause).__name__}: {cause}" if cause else str(exc)) from cause
        self._unflushed.clear()


@functools.cache
def _settings(app: Celery) -> tuple[bool, bool, int, int, str]:
    """The settings a batch reads, once per app: each read of Celery's configuration walks its
    chain of mappings down to Django's settings (about 6 µs), and every request that sends an
    event makes a batch. Like the values Celery itself caches at start (``app.amqp``'s sizes),
    they are read once; the ``kwargsrepr`` of no keyword arguments (Celery's for ``{}``) with them."""
    conf = app.conf
    levels = conf.task_repr_maxlevels
    return (
        bool(conf.task_send_sent_event),
        bool(conf.task_inherit_parent_priority),
        levels,
        app.amqp.argsrepr_maxsize,
        saferepr({}, app.amqp.kwargsrepr_maxsize, maxlevels=levels),
    )


#: The request path's producer pools, per app and broker URL (a test may point the app elsewhere).
_REQUEST_POOLS: dict[tuple[Celery, str], Any] = {}
# A forked child must not share its parent's sockets: kombu drops its own pools after a fork, and so do we.
os.register_at_fork(after_in_child=_REQUEST_POOLS.clear)


def request_producer(app: Celery) -> Any:
    """A producer for the request path (a sign-up's or a telemetry post's dispatch, the door's depth read).

    Like ``app.producer_or_acquire()``, but from a pool of its own whose connections
    carry the request path's short timeouts (EVENTBUS_REQUEST_TRANSPORT_OPTIONS,
    EVENTBUS_REQUEST_TIMEOUT to connect): a broker that hangs costs a request
    that much, not the 5 s the workers' and the relay's connections wait.
    Callers go through ``eventbus.protection.failfast.BROKER``.
    """
    url = app.conf.broker_write_url
    pool = _REQUEST_POOLS.get((app, url))
    if pool is None:
        connection = app.connection_for_write(
            url,
            transport_options=settings.EVENTBUS_REQUEST_TRANSPORT_OPTIONS,
            connect_timeout=settings.EVENTBUS_REQUEST_TIMEOUT,
        )
        # kombu keeps one pool per connection's settings, shared process-wide, as it does for Celery's own.
        pool = pools.producers[connection]
        pool.limit = app.pool.limit
        _REQUEST_POOLS[(app, url)] = pool
    # Waiting for a free producer (all of them busy with a slow broker) is bounded too.
    return pool.acquire(block=True, timeout=app.conf.broker_pool_acquire_timeout or settings.EVENTBUS_REQUEST_TIMEOUT)


@contextlib.contextmanager
def batch(app: Celery, producer: Any) -> Iterator[Batch]:
    """A ``Batch`` over ``producer``; what is left unflushed is discarded on an error, flushed otherwise."""
    with producer.batch(max_size=_UNBOUNDED) as kombu_batch:
        yield Batch(app, producer, kombu_batch)
