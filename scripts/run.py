"""``make run``: the whole system in one terminal, stopped as one by Ctrl-C.

Starts, in order: a Redis of its own when none answers at REDIS_URL, the
migrations, the SMTP sink of the dev inbox (unless EMAIL_HOST is set), the
Django web server, one Celery worker pool per queue of ``project.queues``,
celery beat and Flower. Each process's output is prefixed with its name.

Every process runs in a process group of its own (scripts/supervisor.py). On
SIGINT or SIGTERM, or when any process dies on its own, the others get SIGTERM
(Redis last, so the workers can finish against it), have ~10 s to stop, and
their groups then get SIGKILL. Every process carries ``EVENTDEMO_RUN_ID`` in
its environment, so a leftover can be found in ``/proc/*/environ``.

Run it as ``python -m scripts.run`` from the repository root. Standard library
only: it runs with the project's virtualenv before anything of Django is
imported. Settings are read the way ``project/settings.py`` reads them; an
optional ``.env`` file fills what the real environment leaves unset.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from scripts.redis_server import ensure_redis
from scripts.supervisor import ChildDied, Output, StartupError, StopRequested, Supervisor, port_open

BASE_DIR = Path(__file__).resolve().parent.parent
MARKER = "EVENTDEMO_RUN_ID"

FLOWER_APP_TASKS = "name:notifications OR name:analytics OR name:telemetry"
"""Flower's task search for the application's own tasks (its subscribers'), without beat's relay and broker watch."""

RUN_VARIABLES: dict[str, str] = {
    "FLOWER_BASIC_AUTH": "user:password for Flower; generated once into VAR_DIR/flower-basic-auth when unset",
}
"""Variables only this command reads (settings.py the others); .env.example and docs/configuration.md list both."""


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


def load_project_module(name: str) -> ModuleType:
    """``project/<name>.py`` by its path: importing the package would import Celery and Django."""
    path = BASE_DIR / "project" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_eventdemo_{name}", path)
    if spec is None or spec.loader is None:
        raise StartupError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_queues() -> ModuleType:
    return load_project_module("queues")


def write_run_file(config: Config) -> Path:
    """``$VAR_DIR/run.json``: what this run chose, for commands in a second terminal (project/runfile.py)."""
    runfile = load_project_module("runfile")
    environment = {**config.env, "REDIS_URL": config.redis_url}
    environment.setdefault("CELERY_BROKER_URL", config.redis_url)
    environment.setdefault("WEB_PORT", str(config.web_port))
    environment.setdefault("FLOWER_PORT", str(config.flower_port))
    ports = {"web": config.web_port, "flower": config.flower_port}
    sink = f"{config.email_host}:{config.email_port}"
    path: Path = runfile.write(
        config.var_dir,
        environment,
        pid=os.getpid(),
        run_id=config.run_id,
        ports=ports,
        sink=sink if config.run_sink else None,
    )
    return path


def remove_run_file(config: Config) -> None:
    load_project_module("runfile").remove(config.var_dir, pid=os.getpid())


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

    redis_line = ensure_redis(config.redis_url, config.var_dir / "redis", config.env, supervisor)
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
        f"  web           {web}/",
        f"  sign up       {web}/signup/",
        f"  dev inbox     {web}/dev/inbox/  ({mail})",
        f"  analytics     {web}/analytics/",
        f"  admin         {web}/admin/  (make a user: .venv/bin/python manage.py createsuperuser)",
        f"  ops           {web}/ops/  (staff; with DJANGO_DEBUG on, its panel causes failures to watch)",
        f"  events        {web}/ops/events/  (an event's timeline: every delivery, step by step)",
        f"  dead letters  {web}/ops/deadletters/  (staff with the dead-letter permissions, as in the admin)",
        f"  flower        http://127.0.0.1:{config.flower_port}/  ({login})",
        f"                its Tasks page without beat's housekeeping: search {FLOWER_APP_TASKS}",
        f"  redis         {redis_line}",
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
    supervisor = Supervisor(Output(names), cwd=BASE_DIR)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    config: Config | None = None
    try:
        config = load_config(args.env_file)
        supervisor.say(f"run id {config.run_id}; state in {config.var_dir}")
        for line in start_system(config, supervisor, queues):
            supervisor.say(line)
        supervisor.say(f"commands in another terminal find this system through {write_run_file(config)}")
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
        if config is not None:
            remove_run_file(config)
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main())
