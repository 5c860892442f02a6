"""One Redis round trip that several guards share, each reading back only its own replies.

A delivery's guards each keep a little state in Redis (the attempt count, the
effect lock, the rate limit's token, the breaker; after the effect the lock's
release, the breaker's success, the latency). Sent one by one, those were
eleven round trips per welcome email, a tenth of a pool process's time
(figure 1); gathered in a ``RoundTrip`` they are two, one before the effect
and one after it (eventbus/delivery/pipeline.py).

A guard queues its commands with ``queue`` or ``script`` and keeps the
``Reply`` it gets; once the round trip is sent, the reply holds that guard's
answers and nothing else: no guard counts positions in another's list.

Lua scripts are sent as EVALSHA of a script loaded once per process; a
server that has lost them (restarted, flushed) answers NOSCRIPT for those
commands only, which are then run again one by one (redis-py loads the
script). redis-py's own pipelined scripts would ask SCRIPT EXISTS before
every pipeline: one round trip more each time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from eventbus.redis import client


class Reply:
    """The replies to the commands one guard queued, readable once their round trip was sent."""

    __slots__ = ("_end", "_round", "_start")

    def __init__(self, round_trip: RoundTrip, start: int, end: int) -> None:
        self._round = round_trip
        self._start = start
        self._end = end

    @property
    def received(self) -> bool:
        """False when the round trip failed (a best-effort one: see ``RoundTrip.send``)."""
        return self._round.replies is not None

    @property
    def values(self) -> list[Any]:
        replies = self._round.replies
        if replies is None:
            raise RuntimeError("the round trip was not sent, or failed")
        return replies[self._start : self._end]

    @property
    def first(self) -> Any:
        return self.values[0]


class RoundTrip:
    """Commands gathered from several guards, sent to Redis in one pipeline (no MULTI)."""

    def __init__(self) -> None:
        self._connection = client()
        self._pipe = self._connection.pipeline(transaction=False)
        self._scripts: list[tuple[int, Script, list[Any], list[Any]]] = []
        self.required = False
        """Some guard cannot go on without its replies: ``send`` then raises rather than be best effort."""
        self.replies: list[Any] | None = None

    def __len__(self) -> int:
        return len(self._pipe)

    def queue(self, commands: Callable[[redis.client.Pipeline], object], *, required: bool = False) -> Reply:
        """Queue what ``commands`` sends to the pipeline it is given; its replies come back in the ``Reply``.

        ``required``: the caller cannot go on without the replies (a lock, a token).
        """
        start = len(self._pipe)
        commands(self._pipe)
        self.required = self.required or required
        return Reply(self, start, len(self._pipe))

    def script(self, script: Script, keys: list[Any], args: list[Any], *, required: bool = False) -> Reply:
        """Queue a Lua script (EVALSHA, loaded again should the server answer NOSCRIPT)."""
        start = len(self._pipe)
        self._scripts.append((start, script, keys, args))
        self._pipe.evalsha(script.sha, len(keys), *keys, *args)
        self.required = self.required or required
        return Reply(self, start, start + 1)

    def send(self) -> None:
        """Send what was queued, if anything; raises ``redis.RedisError`` when a command failed.

        A caller for whom the round trip is best effort catches the error; the
        replies are then not ``received``.
        """
        if not len(self._pipe):
            self.replies = []
            return
        replies = self._pipe.execute(raise_on_error=False)
        for index, script, keys, args in self._scripts:
            if isinstance(replies[index], NoScriptError):
                replies[index] = script(keys=keys, args=args, client=self._connection)
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:
            raise failed[0]
        self.replies = replies
