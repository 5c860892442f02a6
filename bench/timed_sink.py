"""An SMTP sink subprocess that keeps when each message arrived and to whom, and nothing else.

``python -m bench.timed_sink [--stamps]`` starts a ``devinbox.sink.SmtpSink``
on a free port whose handler drops every message's content, prints
``ready <port>``, then answers each line on stdin: ``count`` with the number
of messages received, ``drain`` with a JSON list of ``[accepted_at,
[recipients]]`` for the messages received since the last ``drain`` (only with
``--stamps``; ``accepted_at`` is ``time.time()`` when the sink accepted the
message's DATA). It exits when stdin closes.

Figure 5 reads the stamps; figure 6 sends 50,000 emails or more through it,
which the shared sink (``bench/sink.py``) would keep in memory, content and all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.processes import spawn, stop
from bench.sink import SinkProcess


def main(argv: list[str]) -> None:
    from aiosmtpd.smtp import SMTP

    from devinbox.sink import SinkHandler, SmtpSink

    keep_stamps = "--stamps" in argv

    class StampingHandler(SinkHandler):
        def __init__(self) -> None:
            super().__init__(None)
            self.count = 0
            self.stamps: list[tuple[float, list[str]]] = []

        async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
            accepted_at = time.time()
            with self._lock:
                self.count += 1
                if keep_stamps:
                    self.stamps.append((accepted_at, list(envelope.rcpt_tos)))
            return "250 Message accepted for delivery"

    sink = SmtpSink(port=0)
    handler = StampingHandler()
    sink.handler = handler  # before start(): the server's factory reads it
    with sink:
        print(f"ready {sink.port}", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "count":
                with handler._lock:
                    print(handler.count, flush=True)
            elif command == "drain":
                with handler._lock:
                    stamps, handler.stamps = handler.stamps, []
                print(json.dumps(stamps), flush=True)


class TimedSinkProcess(SinkProcess):
    """The parent's handle: ``port``, ``count()``, and ``drain()`` for the stamps since the last call."""

    def __init__(self, *, stamps: bool) -> None:
        argv = [sys.executable, "-m", "bench.timed_sink"] + (["--stamps"] if stamps else [])
        self.process = spawn(argv, env=os.environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            words = self._read_line(timeout=15).split()
            if len(words) != 2 or words[0] != "ready":
                raise RuntimeError(f"timed SMTP sink said {' '.join(words)!r} instead of 'ready <port>'")
            self.port = int(words[1])
        except BaseException:
            stop(self.process)
            raise

    def drain(self) -> list[tuple[float, list[str]]]:
        """``(accepted_at, recipients)`` of each message received since the last call, in arrival order."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"drain\n")
        self.process.stdin.flush()
        return [(float(at), list(rcpts)) for at, rcpts in json.loads(self._read_line(timeout=5))]


if __name__ == "__main__":
    main(sys.argv[1:])
