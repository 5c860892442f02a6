"""A PostgreSQL cluster of the lab's own: initdb in a directory, a free loopback port, stopped and started at will.

It never touches the machine's cluster: its data directory, socket and port are
its own, and ``stop()`` leaves nothing running. The server runs as the
``postgres`` user (PostgreSQL refuses to run as root), so the directory is
handed to that user when the lab runs as root.

Faults: ``stop_server("fast")`` (SIGINT: sessions are ended, a checkpoint is
written, clients see their connection closed), ``stop_server("immediate")``
(SIGQUIT: no checkpoint, crash recovery replays the WAL at the next start), then
``start_server()``. fsync stays on, as in production: a committed transaction
must survive the immediate stop (the checker counts on it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

DATABASE = "eventdemo"
USER = "postgres"
# Bounds on pg_ctl's own waits (-t): an initdb'd cluster starts in well under a second on
# this machine; crash recovery after an immediate stop replays only seconds of WAL.
START_TIMEOUT = 30
STOP_TIMEOUT = 30
MODES = ("smart", "fast", "immediate")


def _binary(name: str) -> str:
    """The PostgreSQL program ``name``: from the PATH (Debian's wrappers) or the newest versioned directory."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError(f"no {name}: install Debian's postgresql package")
    return str(versions[-1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


class PostgresCluster:
    """One PostgreSQL server with trust authentication on 127.0.0.1 only and a database ``eventdemo``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log_path = self.directory / "postgres.log"
        self.port = _free_port()
        self.start_seconds: list[float] = []
        """How long each start took (pg_ctl -w: until the server accepts connections)."""

    @property
    def url(self) -> str:
        return f"postgres://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def env(self) -> dict[str, str]:
        """What the project's processes need to use this cluster."""
        return {"DATABASE_URL": self.url}

    def start(self) -> None:
        """initdb, start, create the database. Idempotent on an initialised directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._hand_over(self.directory)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                _binary("initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
                timeout=120,
            )
            self._configure()
        self.start_server()
        self._run(
            _binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE, timeout=30, check=False
        )

    def _configure(self) -> None:
        # Loopback only, trust there only: pg_hba's socket and 127.0.0.1 lines (no ::1, no other host).
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n", encoding="utf-8"
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "on",
            "synchronous_commit": "on",
            # Workers (prefork) plus web, beat and the checker: the default 100 is plenty, said here.
            "max_connections": "100",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# lab/failover/postgres.py\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def start_server(self) -> float:
        """Start the server and wait (bounded) until it accepts connections; returns the seconds it took."""
        started = time.monotonic()
        self._run(
            _binary("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(START_TIMEOUT),
            "start",
            timeout=START_TIMEOUT + 10,
        )
        took = time.monotonic() - started
        self.start_seconds.append(took)
        return took

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (SIGINT, a clean shutdown) or ``immediate`` (SIGQUIT, crash-like)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._run(
            _binary("pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            str(STOP_TIMEOUT),
            "stop",
            timeout=STOP_TIMEOUT + 10,
        )

    def restart(self, mode: str = "fast") -> None:
        self.stop_server(mode)
        self.start_server()

    def running(self) -> bool:
        result = self._run(_binary("pg_ctl"), "-D", str(self.data), "status", timeout=10, check=False)
        return result.returncode == 0

    def postmaster_pid(self) -> int | None:
        """The server's pid while it runs (its postmaster.pid file), to prove a restart happened."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        """Teardown: the server stopped (immediate: nothing to keep) and gone, the directory left for its logs."""
        pid = self.postmaster_pid()
        if self.data.exists() and self.running():
            try:
                self.stop_server("immediate")
            except (subprocess.SubprocessError, RuntimeError):
                if pid:
                    os.kill(pid, 9)
        # pg_ctl returns once the pid file is gone; the postmaster exits a moment later.
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid and not process_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _hand_over(self, path: Path) -> None:
        """PostgreSQL refuses to run as root: the directory belongs to the postgres user when we are root,
        and the directories above it let that user through (a ``mkdtemp`` directory is root's, mode 0700)."""
        if os.geteuid() != 0:
            return
        account = pwd.getpwnam(USER)
        for item in [path, *path.rglob("*")]:
            os.chown(item, account.pw_uid, account.pw_gid)
        temp = Path(tempfile.gettempdir()).resolve()
        for parent in path.resolve().parents:
            if parent.stat().st_mode & stat.S_IXOTH:
                continue
            if temp not in parent.parents:
                raise RuntimeError(f"the postgres user cannot enter {parent}: put the cluster under {temp}")
            # Passage only (search, no listing), and only for the lab's own directories under the temp dir.
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)

    def _run(self, *command: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program, as the postgres user when we are root, bounded by ``timeout``."""
        argv = ["runuser", "-u", USER, "--", *command] if os.geteuid() == 0 else list(command)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.directory)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result
