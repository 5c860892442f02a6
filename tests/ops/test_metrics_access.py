"""Who may scrape /metrics (closed by default: a bearer token, or loopback only), and what a scrape may cost."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from ruamel.yaml import YAML

from eventbus.models import OutboxEvent
from ops.metrics import access_mode
from tests.observability.test_timeline import signed_up
from tests.project.test_compose import REPO
from tests.project.test_deploy import manage, production_env

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

TOKEN = "s3cret-token"


def get(remote_addr: str, **headers: str) -> int:
    return Client(REMOTE_ADDR=remote_addr).get("/metrics", headers=headers).status_code


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_without_a_token_loopback_clients_are_answered(address: str, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert get(address) == 200


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "2001:db8::1", "::ffff:10.0.0.5", "unknown"])
def test_without_a_token_other_clients_are_refused(address: str, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert get(address) == 403


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
def test_without_a_token_a_proxied_request_is_refused_though_the_proxy_is_on_loopback(
    header: str, settings: Any
) -> None:
    # A proxy on the same host makes every visitor a loopback client; the header it adds gives it away.
    settings.METRICS_TOKEN = ""
    assert get("127.0.0.1", **{header: "203.0.113.9"}) == 403


def test_with_a_token_the_token_decides_from_any_address(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    assert get("127.0.0.1") == 401  # loopback is no longer enough
    assert get("10.0.0.5", Authorization="Bearer nope") == 401
    assert get("10.0.0.5", Authorization=f"Bearer {TOKEN}") == 200
    assert get("127.0.0.1", Authorization=f"Bearer {TOKEN}", **{"X-Forwarded-For": "203.0.113.9"}) == 200


def test_the_mode_is_named(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert "loopback clients only" in access_mode()
    settings.METRICS_TOKEN = TOKEN
    assert "bearer token" in access_mode()


def start_web(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Load the web process's WSGI application (what gunicorn and runserver do at start), then exit."""
    command = [sys.executable, "-c", "import project.wsgi"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_mode_in_force_is_logged_at_start_and_the_token_can_come_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n")

    closed = start_web(production_env(tmp_path, METRICS_TOKEN=None))
    from_file = start_web(production_env(tmp_path, METRICS_TOKEN=None, METRICS_TOKEN_FILE=str(token_file)))

    assert closed.returncode == 0 and from_file.returncode == 0, closed.stderr + from_file.stderr
    assert "/metrics answers loopback clients only" in closed.stderr
    assert "/metrics asks for a bearer token" in from_file.stderr


def test_an_empty_or_missing_token_file_stops_the_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")

    for path in (empty, tmp_path / "missing"):
        result = manage(production_env(tmp_path, METRICS_TOKEN=None, METRICS_TOKEN_FILE=str(path)), "check")
        assert result.returncode != 0
        assert f"METRICS_TOKEN_FILE='{path}'" in result.stderr


# --- what a scrape costs ---------------------------------------------------------------------

OUTBOX = OutboxEvent._meta.db_table
# The only ways a scrape may read the outbox: the rows that wait, the rows not yet settled (both
# bounded by the backlog, on their indexes), and the database's estimate of its size.
BOUNDED = (
    re.compile(r'"status" IN \(', re.I),
    re.compile(r'"settled_at" IS NULL', re.I),
    re.compile(r"pg_stat_user_tables|max\(rowid\)", re.I),
)


@pytest.mark.usefixtures("broker")
def test_no_scrape_query_reads_the_whole_outbox(settings: Any) -> None:
    # given: the outbox is read at all (one waiting row)
    settings.METRICS_TOKEN = ""
    signed_up()

    # when
    with CaptureQueriesContext(connection) as queries:
        assert Client().get("/metrics").status_code == 200

    # then: every statement that names the outbox is one of the bounded reads
    outbox_reads = [q["sql"] for q in queries.captured_queries if OUTBOX in q["sql"]]
    assert outbox_reads, "the scrape read nothing from the outbox: this test would prove nothing"
    unbounded = [sql for sql in outbox_reads if not any(pattern.search(sql) for pattern in BOUNDED)]
    assert unbounded == []


def test_compose_gives_prometheus_the_token_the_web_service_asks_for() -> None:
    # docker-compose's Prometheus is not on the web service's loopback: it must send the generated token.
    compose = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
    prometheus = YAML(typ="safe").load((REPO / "prometheus" / "prometheus.yml").read_text())
    token_file = compose["x-django"]["environment"]["METRICS_TOKEN_FILE"]
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "eventbus"]

    assert job["authorization"] == {"type": "Bearer", "credentials_file": token_file}
    volume = f"metrics-token:{Path(token_file).parent}:ro"
    assert volume in compose["x-django"]["volumes"] and volume in compose["services"]["prometheus"]["volumes"]
    assert "metrics-token" in compose["services"]["web"]["depends_on"]
