"""The run file: `make run` writes what it chose; `manage.py` in a second terminal reads it (project/runfile.py)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from project import runfile
from scripts import run
from tests.project.test_run_command import REPO, child_environment


def a_dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write(var_dir: Path, pid: int, **environment: str) -> Path:
    return runfile.write(var_dir, environment, pid=pid, run_id="r-1", ports={"web": 8123}, sink="127.0.0.1:1026")


def test_variables_the_environment_leaves_unset_come_from_the_file(tmp_path: Path) -> None:
    # given: a running system's file (this test's own pid is alive)
    write(tmp_path, os.getpid(), REDIS_URL="redis://127.0.0.1:6390/0", EMAIL_PORT="1026", WEB_PORT="8123")
    environ = {"WEB_PORT": "9000"}
    notes: list[str] = []
    # when
    taken = runfile.apply(environ, tmp_path, notes.append)
    # then: the environment wins; the rest is taken, and said once
    assert taken == ["REDIS_URL", "EMAIL_PORT"]
    assert environ == {"WEB_PORT": "9000", "REDIS_URL": "redis://127.0.0.1:6390/0", "EMAIL_PORT": "1026"}
    assert len(notes) == 1
    assert "using the running system's REDIS_URL, EMAIL_PORT from" in notes[0]
    assert f"pid {os.getpid()}" in notes[0]


def test_a_file_whose_run_is_gone_is_ignored_with_a_note(tmp_path: Path) -> None:
    pid = a_dead_pid()
    write(tmp_path, pid, REDIS_URL="redis://127.0.0.1:6390/0")
    environ: dict[str, str] = {}
    notes: list[str] = []
    assert runfile.apply(environ, tmp_path, notes.append) == []
    assert environ == {}
    assert notes == [f"ignoring {tmp_path / 'run.json'}: the make run that wrote it (pid {pid}) is no longer running"]


def test_no_file_no_note_and_a_broken_file_is_ignored(tmp_path: Path) -> None:
    notes: list[str] = []
    assert runfile.apply({}, tmp_path, notes.append) == []
    assert notes == []
    (tmp_path / "run.json").write_text("{not json")
    assert runfile.apply({}, tmp_path, notes.append) == []
    assert len(notes) == 1 and "not a run file" in notes[0]


def test_processes_make_run_started_skip_the_file(tmp_path: Path) -> None:
    write(tmp_path, os.getpid(), REDIS_URL="redis://127.0.0.1:6390/0")
    environ = {runfile.MARKER: "some-run"}
    notes: list[str] = []
    assert runfile.apply(environ, tmp_path, notes.append) == []
    assert "REDIS_URL" not in environ and notes == []


def test_only_the_listed_variables_are_written_and_the_file_is_private(tmp_path: Path) -> None:
    path = write(tmp_path, os.getpid(), REDIS_URL="redis://x:1/0", DJANGO_SECRET_KEY="secret", EMAIL_HOST="")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "secret" not in text and "EMAIL_HOST" not in text
    assert '"REDIS_URL": "redis://x:1/0"' in text


def test_the_file_is_removed_only_by_the_run_that_wrote_it(tmp_path: Path) -> None:
    write(tmp_path, os.getpid(), REDIS_URL="redis://x:1/0")
    runfile.remove(tmp_path, pid=os.getpid() + 1)
    assert (tmp_path / "run.json").exists()
    runfile.remove(tmp_path, pid=os.getpid())
    assert not (tmp_path / "run.json").exists()


def test_the_run_command_writes_what_it_chose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: make run with another Redis and other ports, from a clean environment
    for name in (*runfile.VARIABLES, "EMAIL_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/0")
    monkeypatch.setenv("WEB_PORT", "8123")
    monkeypatch.setenv("EMAIL_PORT", "1026")
    config = run.load_config(tmp_path / "absent.env")
    # when
    path = run.write_run_file(config)
    # then
    environ: dict[str, str] = {}
    runfile.apply(environ, tmp_path, lambda _: None)
    assert environ["REDIS_URL"] == environ["CELERY_BROKER_URL"] == "redis://127.0.0.1:6390/0"
    assert (environ["WEB_PORT"], environ["FLOWER_PORT"], environ["EMAIL_PORT"]) == ("8123", "5555", "1026")
    assert environ["EMAIL_HOST"] == "127.0.0.1"
    assert '"sink": "127.0.0.1:1026"' in path.read_text()
    run.remove_run_file(config)
    assert not path.exists()


def test_manage_py_in_a_second_terminal_reads_the_running_systems_redis(tmp_path: Path) -> None:
    # given: a run file of a live run, and a shell that says nothing about Redis
    write(tmp_path, os.getpid(), REDIS_URL="redis://127.0.0.1:6390/3")
    env = child_environment(VAR_DIR=str(tmp_path))
    # when
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", "from django.conf import settings; print(settings.REDIS_URL)"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "redis://127.0.0.1:6390/3"
    assert done.stderr.count("using the running system's REDIS_URL") == 1


@pytest.mark.django_db
def test_the_status_command_warns_when_no_worker_answers(broker: None) -> None:
    # given: this run's broker, where no worker listens
    out, err = io.StringIO(), io.StringIO()
    # when
    call_command("eventbus_status", "--workers-timeout", "0.2", stdout=out, stderr=err)
    # then: the report, and a warning naming the broker it asked
    assert "QUEUES" in out.getvalue()
    assert "warning: no worker answered within 0.2 s on the broker at redis://" in err.getvalue()
