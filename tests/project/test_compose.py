"""docker-compose.yml is valid Compose and starts the same processes as `make run`.

No Docker engine runs where these tests run: the file is validated against the
Compose specification's JSON schema, never run. The worker declarations of the
compose file, the Procfile and docs/running.md are checked against project/queues.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from project import queues
from tests.project.test_env_example import all_variables

REPO = Path(__file__).resolve().parents[2]
DJANGO_SERVICES = {"web", "beat", "flower"}


def service_name(queue: str) -> str:
    # Service names become host names on the compose network: no underscores.
    return "worker-" + queue.replace("_", "-")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with (REPO / "docker-compose.yml").open() as f:
        return YAML(typ="safe").load(f)


def test_validates_against_the_compose_spec() -> None:
    # given the schema that check-jsonschema ships (no network needed)
    command = [
        sys.executable,
        "-m",
        "check_jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        "docker-compose.yml",
    ]
    # when
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    # then
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_worker_service_per_queue(compose: dict[str, Any]) -> None:
    workers = {name for name in compose["services"] if name.startswith("worker-")}
    assert workers == {service_name(q) for q in queues.WORKER_QUEUES}


@pytest.mark.parametrize("queue", queues.WORKER_QUEUES)
def test_each_worker_command_names_its_queue(compose: dict[str, Any], queue: str) -> None:
    command = compose["services"][service_name(queue)]["command"]
    assert command == ["compose/start-worker", queue, str(queues.DEFAULT_CONCURRENCY[queue])]


def test_start_worker_runs_one_pool_for_its_queue() -> None:
    script = (REPO / "compose" / "start-worker").read_text()
    assert 'celery -A project worker -Q "$queue" -c "$concurrency" -n "$queue@%h"' in script


def test_django_services_share_the_anchor(compose: dict[str, Any]) -> None:
    anchor = compose["x-django"]
    names = DJANGO_SERVICES | {service_name(q) for q in queues.WORKER_QUEUES}
    for name in names:
        service = compose["services"][name]
        for key in ("build", "env_file", "environment", "depends_on", "volumes"):
            assert service[key] == anchor[key], f"{name}.{key} differs from x-django"
    assert anchor["build"]["dockerfile"] == "Dockerfile"
    assert "redis" in anchor["depends_on"]
    assert anchor["environment"]["EMAIL_HOST"] == "mailpit"


def test_compose_environment_uses_the_documented_names(compose: dict[str, Any]) -> None:
    unknown = set(compose["x-django"]["environment"]) - all_variables()
    assert not unknown, f"variables that .env.example and docs/configuration.md do not know: {sorted(unknown)}"


def test_published_ports_are_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    assert compose["services"]["flower"]["ports"] == ["127.0.0.1:${FLOWER_PORT:-5555}:5555"]


def test_flower_has_basic_auth_and_persistence() -> None:
    script = (REPO / "compose" / "start-flower").read_text()
    assert "FLOWER_BASIC_AUTH" in script
    assert "--persistent=True" in script


def test_redis_and_mailpit(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7"
    assert "--appendonly" in redis["command"]
    assert redis["volumes"] == ["redis-data:/data"]
    assert compose["services"]["mailpit"]["image"] == "axllent/mailpit"


def test_dockerfile_installs_the_requirements() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "pip install -r requirements.txt" in dockerfile


def worker_lines(text: str) -> list[tuple[str, str, str]]:
    """(queue, concurrency, node name) of each ``celery -A project worker`` line."""
    pattern = r"celery -A project worker -Q (\S+) -c (\d+) -n (\S+)"
    return re.findall(pattern, text)


@pytest.mark.parametrize("path", ["docs/running.md", "Procfile"])
def test_documented_commands_and_procfile_start_one_pool_per_queue(path: str) -> None:
    expected = [(q, str(queues.DEFAULT_CONCURRENCY[q]), f"{q}@%h") for q in queues.WORKER_QUEUES]
    assert worker_lines((REPO / path).read_text()) == expected


@pytest.mark.parametrize("queue", queues.WORKER_QUEUES)
def test_each_worker_has_the_stall_health_check(compose: dict[str, Any], queue: str) -> None:
    check = compose["services"][service_name(queue)]["healthcheck"]
    assert check == compose["x-worker-healthcheck"]
    kind, command = check["test"]
    assert kind == "CMD-SHELL"
    # the command run is the stall check of this container's workers; only its "stalled" answer (1) is
    # unhealthy, not "cannot tell" (2: Redis or the broker unreachable)
    assert command.startswith("python manage.py worker_health ")
    assert command.endswith("; test $$? -ne 1")  # Compose reads $$ as one $: the command's exit status
    assert "--worker" not in command  # the container's own node names, *@%h (compose/start-worker)
    assert '-n "$queue@%h"' in (REPO / "compose" / "start-worker").read_text()


def test_the_health_check_answers_within_its_timeout(compose: dict[str, Any]) -> None:
    check = compose["x-worker-healthcheck"]
    bound = float(check["test"][1].split("--timeout ")[1].split(";")[0])
    assert bound + 5 < float(check["timeout"].rstrip("s"))  # the command's own bound, plus Django's start
