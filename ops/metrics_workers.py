"""``/metrics``' workers: each worker's stall verdict (eventbus/observability/stalls.py), from the bus's Redis.

A source of its own (``workers`` in ``eventbus_metrics_source_up``): its
families need Redis and the broker's depths of the workers' queues. A worker
gone for good drops out of both families within the progress record's expiry
(30 s), so an alert on ``eventbus_worker_stalled == 1`` fires only for a
worker that is there.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from eventbus import ops_api


def families() -> Iterator[Metric]:
    stalled = GaugeMetricFamily(
        "eventbus_worker_stalled",
        "1 when a queue the worker consumes has messages waiting and it finished no task for EVENTBUS_STALL_AFTER "
        "seconds (alive, but no longer consuming), else 0.",
        labels=["worker"],
    )
    quiet = GaugeMetricFamily(
        "eventbus_worker_seconds_since_finish",
        "Seconds since the worker last finished a task (any outcome), or since it started when it finished none.",
        labels=["worker"],
    )
    for health in ops_api.worker_health():
        stalled.add_metric([health.worker], 1 if health.stalled else 0)
        quiet.add_metric([health.worker], round(health.quiet_seconds, 3))
    yield stalled
    yield quiet
