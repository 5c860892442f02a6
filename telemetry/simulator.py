"""Simulated devices posting readings to a running server over real HTTP, paced to a total rate.

Each device gets a token of its own (registered, or rotated, in the
database the command uses) and sends a batch every ``devices * batch / rate``
seconds, staggered so that the load is spread over time. A fraction of the
batches is sent a second time, as a device does after a timeout, to show the
API counting them as duplicates. Threads share the devices; each thread
keeps one HTTP connection open (keep-alive).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from telemetry import tokens
from telemetry.models import Device

METRICS = ("temperature", "humidity", "pressure", "battery")


@dataclass
class Tally:
    """What the server answered, summed over every thread (guarded by ``lock``)."""

    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    throttled: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, body: dict[str, int] | None, seconds: float, readings: int) -> None:
        with self.lock:
            self.requests += 1
            self.latencies.append(seconds)
            if status == 202 and body is not None:
                self.accepted += body.get("accepted", 0)
                self.duplicates += body.get("duplicates", 0)
            elif status == 429:
                self.throttled += readings
            else:
                self.errors += readings

    def percentile(self, q: float) -> float:
        with self.lock:
            ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def summary(self, elapsed: float) -> str:
        return (
            f"{self.requests} requests in {elapsed:.1f}s: accepted {self.accepted} "
            f"({self.accepted / max(elapsed, 1e-9):.0f} readings/s), duplicates {self.duplicates}, "
            f"throttled {self.throttled}, errors {self.errors}; "
            f"latency p50 {self.percentile(0.5) * 1000:.1f} ms, p99 {self.percentile(0.99) * 1000:.1f} ms"
        )


@dataclass
class SimDevice:
    name: str
    token: str
    next_seq: int = 0
    last_batch: bytes | None = None


def register(count: int, prefix: str = "sim") -> list[SimDevice]:
    """``count`` devices named ``<prefix>-0001``...; existing ones get a new token (shown only to the simulator)."""
    devices = []
    for n in range(1, count + 1):
        name = f"{prefix}-{n:04d}"
        existing = Device.objects.filter(name=name).first()
        token = tokens.rotate(existing) if existing is not None else tokens.register(name)[1]
        # Continue after the seqs already recorded: a rerun must not look like a resend.
        last = existing.readings.order_by("-seq").values_list("seq", flat=True).first() if existing else None
        devices.append(SimDevice(name, token, next_seq=(last or 0) + 1))
    return devices


def make_batch(device: SimDevice, size: int, rng: random.Random) -> bytes:
    now = datetime.now(UTC).isoformat()
    readings = []
    for _ in range(size):
        metric = METRICS[device.next_seq % len(METRICS)]
        readings.append({"seq": device.next_seq, "at": now, "metric": metric, "value": round(rng.gauss(20, 5), 3)})
        device.next_seq += 1
    return json.dumps({"readings": readings}).encode()


class Simulation:
    """Drive ``devices`` against ``url`` at ``rate`` readings per second for ``duration`` seconds."""

    def __init__(
        self,
        url: str,
        devices: list[SimDevice],
        *,
        rate: float,
        duration: float,
        batch: int,
        threads: int,
        resend: float = 0.02,
        seed: int = 1,
    ) -> None:
        self.url = urlsplit(url)
        self.devices = devices
        self.rate = rate
        self.duration = duration
        self.batch = batch
        self.threads = max(1, min(threads, len(devices)))
        self.resend = resend
        self.seed = seed
        self.tally = Tally()

    @property
    def interval(self) -> float:
        """Seconds between two batches of one device."""
        return len(self.devices) * self.batch / self.rate

    def run(self, on_progress: Callable[[int], None] | None = None) -> float:
        """Run to the end; returns the elapsed seconds. ``on_progress(readings)`` after every request."""
        started = time.monotonic()
        stop_at = started + self.duration
        workers = [
            threading.Thread(
                target=self._drive, args=(self.devices[n :: self.threads], started, stop_at, n, on_progress)
            )
            for n in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.monotonic() - started

    def _drive(
        self,
        devices: list[SimDevice],
        started: float,
        stop_at: float,
        offset: int,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        rng = random.Random(self.seed * 1000 + offset)
        connection = self._connect()
        # Device k of this thread first sends at a staggered moment within one interval.
        due = [started + self.interval * (offset + k * self.threads) / len(self.devices) for k in range(len(devices))]
        try:
            while True:
                k = min(range(len(devices)), key=due.__getitem__)
                # The duration is wall time: a server that cannot keep up
                # leaves batches unsent (its rate shows in the summary).
                if due[k] >= stop_at or time.monotonic() >= stop_at:
                    return
                pause = due[k] - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                device = devices[k]
                if device.last_batch is not None and rng.random() < self.resend:
                    body = device.last_batch  # as after a timeout: the same batch again
                else:
                    body = device.last_batch = make_batch(device, self.batch, rng)
                connection = self._post(connection, device, body)
                if on_progress is not None:
                    on_progress(self.batch)
                due[k] += self.interval
        finally:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        host = self.url.hostname or "127.0.0.1"
        if self.url.scheme == "https":
            return http.client.HTTPSConnection(host, self.url.port or 443, timeout=10)
        return http.client.HTTPConnection(host, self.url.port or 80, timeout=10)

    def _post(
        self, connection: http.client.HTTPConnection, device: SimDevice, body: bytes
    ) -> http.client.HTTPConnection:
        path = (self.url.path.rstrip("/") or "") + "/api/v1/readings"
        headers = {"Authorization": f"Bearer {device.token}", "Content-Type": "application/json"}
        started = time.monotonic()
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            status = response.status
            parsed = json.loads(raw) if status == 202 else None
        except (OSError, http.client.HTTPException, ValueError):
            connection.close()
            self.tally.add(0, None, time.monotonic() - started, self.batch)
            return self._connect()
        self.tally.add(status, parsed, time.monotonic() - started, self.batch)
        return connection
