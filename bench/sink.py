"""The SMTP sink in a process of its own, so that it never competes with the relay for one GIL.

``python -m bench.sink`` starts ``devinbox.sink.SmtpSink`` on a free port, prints
``ready <port>``, then answers each ``count`` line on stdin with the number of
messages received. It exits when stdin closes.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys

from bench.processes import spawn, stop


def main() -> None:
    from devinbox.sink import SmtpSink

    with SmtpSink(port=0) as sink:
        print(f"ready {sink.port}", flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(len(sink.handler.received), flush=True)


class SinkProcess:
    """The parent's handle: ``port`` to point EMAIL_PORT at, ``count()`` to read progress."""

    def __init__(self) -> None:
        self.process = spawn(
            [sys.executable, "-m", "bench.sink"],
            env=os.environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            words = self._read_line(timeout=15).split()
            if len(words) != 2 or words[0] != "ready":
                raise RuntimeError(f"SMTP sink said {' '.join(words)!r} instead of 'ready <port>'")
            self.port = int(words[1])
        except BaseException:
            stop(self.process)
            raise

    def _read_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"SMTP sink did not answer within {timeout:g}s")
        line = self.process.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"SMTP sink exited ({self.process.poll()})")
        return line

    def count(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(b"count\n")
        self.process.stdin.flush()
        return int(self._read_line(timeout=5))

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)  # it leaves on its own when stdin closes
        stop(self.process, timeout=5)


if __name__ == "__main__":
    main()
