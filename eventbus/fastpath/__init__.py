"""The fast path: code that exists only for speed.

Nothing here is part of the pattern. The outbox (eventbus/outbox/) and the
delivery (eventbus/delivery/) would keep their guarantees on Django's ORM,
Celery's ``apply_async`` and kombu's Redis transport as they come; these
modules do the same work for less: the same rows, the same messages, the
acknowledgement still after the effect. Each module's docstring names the figure of
docs/benchmarks.md that it buys and by how much; the measurements, and the
levers whose gain a full benchmark run cannot show above its run-to-run
spread (the candidates to replace with the plain call), are in
docs/benchmarks-levers.md.

The pattern's code comes in through a few narrow doors:

- publishing (eventbus/outbox/publish.py and fanout.py, telemetry/door.py):
  ``statements.insert`` and ``statements.mark_dispatched``;
  ``publishing_batch.batch`` with Celery's ``app.producer_or_acquire()`` or ``request_producer``;
  ``marks.can_wait`` and the outbox's ``marks.Marker`` (``fanout.MARKER``);
- consuming (eventbus/delivery/pipeline.py and batch.py, eventbus/signals.py):
  ``bookkeeping.RoundTrip``, on which every guard queues its Redis commands;
  ``broker_fetch.fetch_many``; ``dbconnections.tidy`` around every task;
- rows on the consumers' path (eventbus/delivery/ledger.py,
  analytics/recording.py): ``inserts.Insert``;
- settings: ``CELERY_RESULT_BACKEND = "eventbus.fastpath.results:UpsertDatabaseBackend"``
  and ``CELERY_BROKER_TRANSPORT = "eventbus.fastpath.broker:FailFastRedisTransport"``.

What is here, for the request path: ``statements`` (the outbox's INSERT and
dispatched mark, SQL made once), ``publishing_batch`` (many task messages in
one Redis round trip), ``marks`` (dispatched marks written many rows at once,
off the request). For the consumers: ``bookkeeping`` (a delivery's Redis work in two
round trips), ``inserts`` (rows with SQL made once), ``results`` (Celery's
result rows in one upsert, gathered), ``dbconnections`` (connections kept
between tasks), ``broker`` with ``broker_pop_and_record.lua`` (bulk
acknowledgements and many messages per fetch for batching subscribers; the
same transport also fails fast on a dead broker and outlives a lost
connection, which is not speed but lives with it). ``gatherer`` is the background writer that
``marks`` and ``results`` share.
"""
