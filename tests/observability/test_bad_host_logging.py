"""A request with a Host not in ALLOWED_HOSTS answers 400 and logs one WARNING line, not a traceback.

Through a real gunicorn with the production environment and the project's
LOGGING (tests/project/test_deploy.py's fixture): JSON lines on its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import REPO, wait_for
from tests.project.test_deploy import Server, get, gunicorn  # noqa: F401  (gunicorn is the fixture)

SECURITY_LOGGER = "django.security.DisallowedHost"


def log_lines_after(log: Path, offset: int) -> list[str]:
    return log.read_bytes()[offset:].decode("utf-8", "replace").splitlines()


def request_and_read_log(server: Server, path: str, host: str) -> tuple[int, list[str]]:
    """GET ``path`` with ``host``; the status and every log line the request wrote."""
    offset = server.log.stat().st_size
    status = get(server, path, Host=host).status_code
    # The line is written before the response is sent; the marker request's line (an ordinary
    # 404, logged by django.request) arriving after it shows that nothing else is still coming.
    marker = f"/no-such-page-{time.monotonic_ns()}/"
    assert get(server, marker).status_code == 404
    wait_for(lambda: marker in server.log.read_text(errors="replace")[offset:], what="the marker's log line")
    lines = log_lines_after(server.log, offset)
    return status, [line for line in lines if marker not in line]


def test_a_bad_host_is_one_warning_line_with_host_and_path(gunicorn: Server) -> None:  # noqa: F811
    status, lines = request_and_read_log(gunicorn, "/signup/?x=1", "evil.example")

    assert status == 400
    (line,) = lines  # one line: no traceback
    entry: dict[str, Any] = json.loads(line)
    assert entry["logger"] == SECURITY_LOGGER
    assert entry["level"] == "WARNING"
    assert "evil.example" in entry["message"]
    assert "/signup/" in entry["message"]
    assert "exc_info" not in entry


def test_a_long_host_is_cut_and_a_token_in_the_path_is_masked(gunicorn: Server) -> None:  # noqa: F811
    # given: a 2,000-character host and a verification-like signed value in the path
    host = "a" * 2000 + ".example"
    token = "eyJ1IjoxLCJlIjoiYUBleGFtcGxlLmNvbSJ9:1tAbCd:" + "s" * 43

    status, lines = request_and_read_log(gunicorn, f"/signup/verify/{token}/", host)

    assert status == 400
    (line,) = lines
    message = json.loads(line)["message"]
    assert "a" * 255 in message and "a" * 256 not in message
    assert "(2008 characters)" in message
    assert token not in message and "s" * 20 not in message
    assert "[redacted]" in message


# --- the development format, where the traceback would be 15 lines ------------------------

PROBE = """
import django, sys
django.setup()
from django.test import Client
response = Client(HTTP_HOST="evil.example").get("/signup/")
print("status", response.status_code, file=sys.stdout, flush=True)
"""


def test_a_bad_host_is_one_text_line_in_development(tmp_path: Path) -> None:
    # given: the settings as `make run` has them (DEBUG on, text lines on stderr)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "LOG_"))}
    env.update(DJANGO_SETTINGS_MODULE="project.settings", DJANGO_DEBUG="1", VAR_DIR=str(tmp_path))

    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    assert probe.stdout.strip() == "status 400", probe.stderr
    (line,) = probe.stderr.splitlines()
    assert " WARNING " in line and SECURITY_LOGGER in line
    assert "evil.example" in line and "/signup/" in line
