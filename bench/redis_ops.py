"""Redis commands per sign-up, per delivery and per telemetry batch: the capacity model's Redis figure.

``python -m bench.redis_ops [--events N]`` counts, on a ``redis-server`` of its
own (``INFO commandstats`` after ``CONFIG RESETSTAT``), the commands each side
of the pipeline sends:

1. **publishing**: ``N`` sign-ups through ``signups.services.sign_up`` (the
   request's work: the sign-up limiter, the on-commit dispatch of both
   messages, the queue-depth read), no worker running;
2. **delivering**: a worker (``-c 2``, prefork) started on the notifications
   and analytics queues, until the ``2N`` deliveries are done, then stopped;
3. **telemetry**: ``N / 10`` batches of 100 readings accepted
   (``telemetry.ingest.accept``), then a telemetry worker rolling them up.

Each phase's total (MULTI and EXEC included, and the worker's fetches:
``BRPOP``, which a busy worker sends about once per message and an idle one
once per second per queue) is divided by its events. Counts, not times: the
figure does not depend on the machine's load.
It writes ``bench/results/<UTC time>-redis-ops.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.processes import spawn, stop, wait_until
from bench.world import world

RESULTS = Path(__file__).resolve().parent / "results"


def commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


def measure(events: int, say: Any = print) -> dict[str, Any]:
    with world(say=say) as (env, _sink):
        # Importable once world() has set Django up.
        from django.contrib.auth import get_user_model

        from bench.throughput import PASSWORD, PIPELINE_QUEUES, worker_argv
        from eventbus.models import ProcessedEvent
        from project import queues
        from signups.services import sign_up
        from telemetry import tokens
        from telemetry.ingest import accept
        from telemetry.schemas import ReadingIn

        client = redis.Redis.from_url(env.redis_url)
        phases: dict[str, dict[str, Any]] = {}

        def phase(name: str, per: int, action: Any) -> None:
            client.config_resetstat()
            action()
            counted = commandstats(client)
            counted.pop("config|resetstat", None)
            counted.pop("info", None)
            total = sum(counted.values())
            phases[name] = {
                "events": per,
                "commands": total,
                "per_event": round(total / per, 2),
                "brpop": counted["brpop"],
                "by_command": dict(counted.most_common(12)),
            }
            say(f"{name}: {total} commands for {per} events, {total / per:.1f} per event ({counted['brpop']} BRPOP)")

        def deliver(worker_queues: tuple[str, ...], target: int, log: str) -> None:
            argv = worker_argv("project", worker_queues, log, None)
            worker = spawn(argv, env=os.environ, log=env.log_dir / f"{log}.log")
            try:
                wait_until(lambda: ProcessedEvent.objects.count() >= target, timeout=300, what=f"{target} deliveries")
            finally:
                stop(worker, timeout=30)

        def sign_ups() -> None:
            for i in range(events):
                sign_up(f"ops-{i}@example.com", PASSWORD)

        phase("publish, per sign-up", events, sign_ups)
        assert get_user_model().objects.count() == events
        phase("deliver, per delivery", 2 * events, lambda: deliver(PIPELINE_QUEUES, 2 * events, "pipeline"))

        device, _token = tokens.register("ops-device")
        batches = max(1, events // 10)
        now = datetime.now(UTC).isoformat()

        def ingest() -> None:
            for b in range(batches):
                readings = [ReadingIn(seq=b * 100 + i, at=now, metric="temperature", value=20.0) for i in range(100)]
                accept(device, readings)

        phase("telemetry accept, per batch of 100", batches, ingest)
        target = 2 * events + batches
        phase("telemetry roll-up, per batch of 100", batches, lambda: deliver((queues.TELEMETRY,), target, "rollup"))
        return {"events": events, "phases": phases, "redis": client.info("server")["redis_version"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args(argv)
    started = time.time()
    result = measure(args.events)
    result["seconds"] = round(time.time() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-redis-ops.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
