"""The benchmark's small helpers: /proc readings and the stamping SMTP sink (bench/procinfo.py, bench/timed_sink.py)."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time

from bench import procinfo
from bench.timed_sink import TimedSinkProcess


def test_procinfo_finds_children_and_reads_their_size_and_cpu_time() -> None:
    sleeper = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"
    parent = subprocess.Popen([sys.executable, "-c", sleeper], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not procinfo.children(parent.pid):
            assert time.monotonic() < deadline, "the child never appeared"
            time.sleep(0.05)
        (child,) = procinfo.children(parent.pid)
        assert procinfo.rss_kib(child) > 1000  # a Python interpreter is several MiB
        assert parent.pid in procinfo.children(os.getpid())
        assert procinfo.cpu_seconds(parent.pid) >= 0
        procinfo.wait_quiet(parent.pid, timeout=10, quiet_for=0.3, idle_cpu=0.05)  # both are asleep
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the child too
        parent.wait()


def test_timed_sink_counts_and_stamps_each_message_once() -> None:
    sink = TimedSinkProcess(stamps=True)
    try:
        before = time.time()
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.com"], "Subject: one\r\n\r\nhello")
            client.sendmail("a@example.com", ["c@example.com", "d@example.com"], "Subject: two\r\n\r\nhello")
        assert sink.count() == 2
        stamps = sink.drain()
        assert [rcpts for _, rcpts in stamps] == [["b@example.com"], ["c@example.com", "d@example.com"]]
        assert all(before <= at <= time.time() for at, _ in stamps)
        assert sink.drain() == []
    finally:
        sink.close()
