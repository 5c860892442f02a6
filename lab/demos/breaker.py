"""Circuit breaker: the provider refuses, the breaker opens for every worker, no sends while open, one probe."""

from __future__ import annotations

import time

from django.conf import settings

from lab.narration import Verdict, check
from lab.stage import Stage
from notifications.provider import email_breaker
from notifications.subscribers import send_welcome_email
from project import queues

SUMMARY = "the provider refuses every send: the breaker opens after 3 failures, no connection while open, one probe"

ENV = {"EMAIL_BREAKER_FAILURE_THRESHOLD": "3", "EMAIL_BREAKER_RESET_TIMEOUT": "2", "EVENTBUS_RETRY_BASE_DELAY": "0.2"}

SIGN_UPS = 3
WELCOME = send_welcome_email.name
# A send that passed the breaker just before it opened can still reach the provider in
# its first moments (rendering, the SMTP round trips): that is no call *started* while
# open. Its MAIL arrived up to a few hundred ms late on a loaded machine (a CI run).
IN_FLIGHT_GRACE = 0.5


def run(stage: Stage) -> Verdict:
    breaker = email_breaker()
    stage.say(
        f"breaker {breaker.name}: opens after {settings.EMAIL_BREAKER_FAILURE_THRESHOLD} consecutive failures "
        f"from any worker, half-opens {settings.EMAIL_BREAKER_RESET_TIMEOUT:g}s later; state in Redis"
    )
    # Three processes: the tasks that come back when the breaker half-opens meet the probe in flight.
    stage.worker("breaker", queues.NOTIFICATIONS, concurrency=3)
    stage.sink.refuse("MAIL")
    stage.say("the provider is down: it answers 451 to every send")
    for _ in range(SIGN_UPS):
        stage.sign_up()
    stage.say(f"{SIGN_UPS} people signed up")

    seen = [breaker.state().state]
    stage.say(f"breaker: {seen[-1]}")
    opened = None
    closed_at = None
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and closed_at is None:
        stage.follow_steps()
        state = breaker.state()
        if state.state != seen[-1]:
            seen.append(state.state)
            stage.say(
                f"breaker: {state.state} (consecutive failures {state.consecutive_failures}, "
                f"sends that reached the provider so far {len(stage.sink.handler.mail_times)})"
            )
            if state.state == "open" and opened is None:
                opened = state
                # The provider recovers while the breaker is open; nobody can tell until the probe.
                stage.sink.accept()
                stage.say("the provider is back (the workers cannot know: the breaker is open)")
            if state.state == "closed" and opened is not None:
                closed_at = time.time()
        time.sleep(0.02)
    stage.wait("every welcome email", lambda: stage.emails() >= SIGN_UPS)
    stage.follow_steps()
    times = stage.sink.handler.mail_times
    if opened is None or opened.opened_at is None or opened.half_open_at is None or closed_at is None:
        return check(f"the breaker went {' -> '.join(seen)}; it never opened and closed again", False)
    in_flight = sum(opened.opened_at <= t < opened.opened_at + IN_FLIGHT_GRACE for t in times)
    while_open = sum(opened.opened_at + IN_FLIGHT_GRACE <= t < opened.half_open_at for t in times)
    # While the probe holds its lease, every other caller is told to wait for it. The window ends
    # when the provider accepted the first message after the half-opening (the probe's, whose
    # success closes the breaker) if that came first: sends after it meet a closed breaker.
    accepted = [t for t in stage.sink.handler.data_times if t >= opened.half_open_at]
    lease_end = opened.half_open_at + breaker.probe_lease
    probe_window = (opened.half_open_at, min([lease_end, *accepted[:1]]))
    probes = sum(probe_window[0] <= t < probe_window[1] for t in times)
    waits = stage.counter("breaker_waits", WELCOME)
    if in_flight:
        stage.say(
            f"{in_flight} send(s) that had passed the breaker before it opened reached the provider "
            f"within {IN_FLIGHT_GRACE:g}s of the opening"
        )
    stage.say(
        f"open for {opened.half_open_at - opened.opened_at:.1f}s: {while_open} new sends reached the provider; "
        f"half-open: {probes} probe in its {breaker.probe_lease:g}s lease, which closed the breaker; "
        f"{waits} task runs waited in all instead of sending"
    )
    return check(
        f"closed -> open after {opened.consecutive_failures} failures, {while_open} sends while open "
        f"({waits} waits), {probes} probe, closed; {stage.emails()} emails",
        opened.consecutive_failures >= settings.EMAIL_BREAKER_FAILURE_THRESHOLD,
        while_open == 0,
        probes == 1,
        stage.emails() == SIGN_UPS == stage.distinct_emails(),
    )
