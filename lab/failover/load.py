"""The load of a lab run: people signing up through the form, and devices posting readings, over real HTTP.

Sign-ups go through the page as a browser sends them (GET for the CSRF token,
then POST), one every ``1 / rate`` seconds, from one thread. Each answer is
kept: a 302 is a committed sign-up the checker must find done once; any other
answer (a 503 while the database is away, a connection refused) is a refused
one, which must leave nothing behind. Readings come from the telemetry
simulator (telemetry/simulator.py) in a second thread.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from lab.failover.system import System
from telemetry.simulator import Simulation, register

PASSWORD = "a long enough passphrase 42"
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class LoadReport:
    attempted: int = 0
    committed: list[str] = field(default_factory=list)
    """The addresses whose sign-up was answered 302."""
    refused: Counter[str] = field(default_factory=Counter)
    """Other answers, by status (or the exception's name when there was no answer)."""
    readings_accepted: int = 0
    readings_refused: int = 0


class Load:
    """Sign-ups at ``rate`` per second and readings at ten times that, until ``stop()``."""

    def __init__(self, system: System, rate: float, seed: int) -> None:
        self.system = system
        self.rate = rate
        self.seed = seed
        self.report = LoadReport()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._sign_up_loop, name="sign-ups", daemon=True),
            threading.Thread(target=self._readings_loop, name="readings", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> LoadReport:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.report

    def _readings_loop(self) -> None:
        """The simulator in two-second rounds (it runs for a set duration), so that ``stop()`` ends it soon."""
        devices = register(4, prefix=f"lab{self.seed}")
        while not self._stopping.is_set():
            simulation = Simulation(
                self.system.base_url, devices, rate=self.rate * 10, duration=2, batch=10, threads=1, seed=self.seed
            )
            simulation.run()
            self.report.readings_accepted += simulation.tally.accepted
            self.report.readings_refused += simulation.tally.throttled + simulation.tally.errors

    def _sign_up_loop(self) -> None:
        rng = random.Random(self.seed)
        session = requests.Session()
        n = 0
        next_at = time.monotonic()
        while not self._stopping.is_set():
            n += 1
            email = f"lab{self.seed}-{n}-{rng.randrange(10**6)}@example.com"
            self.report.attempted += 1
            outcome = self._sign_up(session, email)
            if outcome == "302":
                self.report.committed.append(email)
            else:
                self.report.refused[outcome] += 1
                session = requests.Session()  # a browser that gave up starts over
            next_at += 1 / self.rate
            self._stopping.wait(max(0.0, next_at - time.monotonic()))

    def _sign_up(self, session: requests.Session, email: str) -> str:
        url = self.system.base_url + "/signup/"
        try:
            page = session.get(url, timeout=10)
            token = _CSRF.search(page.text)
            if page.status_code != 200 or token is None:
                return str(page.status_code)
            form = {"csrfmiddlewaretoken": token.group(1), "email": email}
            form |= {"password": PASSWORD, "password_confirm": PASSWORD}
            answer = session.post(url, data=form, timeout=10, allow_redirects=False, headers={"Referer": url})
            return str(answer.status_code)
        except requests.RequestException as exc:
            return type(exc).__name__
