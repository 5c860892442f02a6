"""The message Redis hands to a cut-off consumer is lost by the broker, and the reconciler delivers it once.

kombu's Redis transport pops a message with ``BRPOP`` and records it as
unacknowledged only once it has arrived. A worker whose link is cut while its
``BRPOP`` waits in Redis still looks connected to Redis, which pops the next
message pushed to that queue and writes it into the dead connection: it is in
no queue and in no unacknowledged set (docs/reliability.md, "Known limits", used
to end there). This test makes that happen on purpose (host a idle, its ``BRPOP``
just issued, its link cut, then a sign-up), shows that the broker lost exactly
that delivery, and that the reconciler sends it again and host b does it: one
email and one analytics row per sign-up.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from eventbus.models import DeliveryStep, ProcessedEvent
from eventbus.operations.reconcile import reconcile
from eventbus.redis import client as redis_client
from tests.conftest import wait_for
from tests.factories import sign_up_via_client
from tests.faults.harness import settled
from tests.scaleout import network
from tests.scaleout.conftest import HOST_ENV, Cluster
from tests.scaleout.test_two_hosts import all_delivered, backlog, count_effects, signed_up_events

_UNAVAILABLE = network.unavailable()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"cut-connection test: {_UNAVAILABLE}"),
]

# Above the hosts' task time limit (EVENTBUS_TIME_LIMIT), as the settings require.
REDELIVER_AFTER = float(HOST_ENV["EVENTBUS_TIME_LIMIT"]) + 1.0
# Host a's BRPOP waits this long in Redis (tests/scaleout/worker.py) instead of kombu's 1 s ...
BRPOP_TIMEOUT = 20
# ... and its link is cut while at least this much of the wait is left, so that the sign-up's message meets it.
BRPOP_LEFT = 10


def blocked_pop_of(address: str) -> dict[str, Any] | None:
    """Host ``address``'s connection while it waits in ``BRPOP``, from Redis's CLIENT LIST."""
    for entry in redis_client().client_list():
        if entry["addr"].rsplit(":", 1)[0] == address and entry.get("cmd") == "brpop" and "b" in entry["flags"]:
            return entry
    return None


def test_the_message_popped_into_a_cut_connection_is_sent_again_and_done_once(cluster: Cluster, settings: Any) -> None:
    settings.EVENTBUS_REDELIVER_AFTER = REDELIVER_AFTER
    a = cluster.spawn("a", SCALEOUT_BRPOP_TIMEOUT=str(BRPOP_TIMEOUT))
    cluster.wait_ready(a)
    client = Client()

    # given: host a idle, waiting in a BRPOP with at least BRPOP_LEFT seconds of it left
    def waiting_long_enough() -> bool:
        entry = blocked_pop_of(a.host.address)
        return entry is not None and int(entry["idle"]) <= BRPOP_TIMEOUT - BRPOP_LEFT

    wait_for(waiting_long_enough, timeout=30, interval=0.01, what="host-a waiting in a BRPOP")
    started = time.monotonic()

    # when: its link is cut, and one person signs up at once
    a.host.cut()
    assert sign_up_via_client(client).status_code == 302
    elapsed = time.monotonic() - started
    assert elapsed < BRPOP_LEFT, f"the sign-up took {elapsed:.2f}s: host-a's BRPOP may have ended first"
    [event_id] = signed_up_events()

    # then: Redis handed one of the event's messages to the dead connection: the broker holds it nowhere
    wait_for(lambda: blocked_pop_of(a.host.address) is None, timeout=5, what="host-a's BRPOP served")
    assert backlog() == 1, f"{backlog()} messages queued: expected one of the two popped into host-a's link"
    assert not redis_client().hlen(settings.REDIS_KEY_PREFIX + "unacked")

    # when: host b runs, more people sign up, and the reconciler runs once the lost delivery is overdue
    b = cluster.spawn("b")
    cluster.wait_ready(b)
    for _ in range(5):
        assert sign_up_via_client(client).status_code == 302
    wait_for(lambda: ProcessedEvent.objects.count() == 2 * 6 - 1, timeout=30, what="every delivery but the lost one")
    assert not all_delivered(cluster.sink)
    assert reconcile().redelivered == 0, "nothing is overdue yet"
    time.sleep(REDELIVER_AFTER)
    result = reconcile()

    # then: exactly the lost delivery is sent again, and host b does it
    assert result.redelivered == 1, result.summary()
    wait_for(lambda: all_delivered(cluster.sink), timeout=30, interval=0.2, what="the lost delivery done")
    # Until nothing more can arrive (no message waiting, none held unacknowledged), so that a
    # second copy would be counted below rather than missed.
    wait_for(settled, timeout=30, interval=0.2, what="every message settled")
    [step] = DeliveryStep.objects.filter(step=DeliveryStep.Step.REDELIVERED)
    assert str(step.event_id) == event_id
    tally = count_effects(cluster.sink)
    print(
        f"[cut connection] committed={tally.committed} delivered={tally.emailed}+{tally.recorded} lost={tally.lost} "
        f"doubled={tally.duplicates} redelivered={result.redelivered} ({step.subscriber})"
    )
    assert tally.committed == 6 and tally.duplicates == 0 and tally.lost == 0 and not tally.problems, tally
    assert tally.emailed == tally.recorded == tally.committed
