"""Deploy-safe settings, and the production web server, each in a fresh process with a production environment.

Settings are read once per process, so every environment here gets a process
of its own: ``manage.py check --deploy`` must report nothing with DEBUG off and
the defaults, a missing or weak secret and missing host names must stop the
process at start, and gunicorn (after collectstatic) must serve the sign-up
page and whitenoise the static files, as ``compose/start-web`` runs them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings

REPO = Path(__file__).resolve().parents[2]
SECRET = secrets.token_urlsafe(50)
HOST = "example.com"


def production_env(directory: Path, **overrides: str | None) -> dict[str, str]:
    """This test run's environment with DEBUG off and what production must set; ``None`` removes a variable.

    Every ``DJANGO_*`` variable of the shell is dropped first, so that only the
    defaults and what a test names decide the outcome.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=SECRET,
        DJANGO_ALLOWED_HOSTS=HOST,
        SITE_URL=f"https://{HOST}",
        DATABASE_URL=f"sqlite:///{directory / 'db.sqlite3'}",
        VAR_DIR=str(directory / "var"),
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


# --- manage.py check --deploy ---------------------------------------------------------


def test_check_deploy_reports_nothing_in_production(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_check_deploy_does_report_the_development_defaults(tmp_path: Path) -> None:
    # The control for the test above: the same check fails on what DEBUG on leaves insecure.
    result = manage(production_env(tmp_path, DJANGO_DEBUG="1"), "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode != 0
    for code in ("security.W004", "security.W008", "security.W012", "security.W016", "security.W018"):
        assert code in result.stderr, result.stderr


# --- refusals at start ------------------------------------------------------------------

WEAK_SECRETS = {
    "unset": None,
    "the development default": "dev-insecure-secret-key-change-me-in-production-0123456789",
    "49 characters": secrets.token_urlsafe(50)[:49],
    "4 distinct characters": "abcd" * 20,
    "Django's insecure prefix": "django-insecure-" + secrets.token_urlsafe(50),
}


@pytest.mark.parametrize("case", sorted(WEAK_SECRETS))
def test_a_missing_or_weak_secret_key_stops_the_process(tmp_path: Path, case: str) -> None:
    weak = WEAK_SECRETS[case]

    result = manage(production_env(tmp_path, DJANGO_SECRET_KEY=weak), "check")

    assert result.returncode != 0
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("django.core.exceptions.")]
    assert "ImproperlyConfigured: DJANGO_DEBUG is off but DJANGO_SECRET_KEY is" in message
    assert "secrets.token_urlsafe(50)" in message, "the message says what to write"
    if weak:
        assert weak not in result.stderr, "the message must not repeat the key"


@pytest.mark.parametrize("hosts", [None, "", " , "])
def test_production_without_allowed_hosts_stops_the_process(tmp_path: Path, hosts: str | None) -> None:
    result = manage(production_env(tmp_path, DJANGO_ALLOWED_HOSTS=hosts), "check")

    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_DEBUG is off but DJANGO_ALLOWED_HOSTS is unset or empty" in result.stderr
    assert "DJANGO_ALLOWED_HOSTS=example.com" in result.stderr, "the message says what to write"


@pytest.mark.parametrize("site_url", [None, "", "example.com"])
def test_production_without_a_site_url_stops_the_process(tmp_path: Path, site_url: str | None) -> None:
    result = manage(production_env(tmp_path, SITE_URL=site_url), "check")

    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_DEBUG is off but SITE_URL is unset" in result.stderr
    assert "SITE_URL=https://example.com" in result.stderr, "the message says what to write"


def test_a_tls_broker_url_without_certificate_checks_stops_the_process(tmp_path: Path) -> None:
    env = production_env(tmp_path, CELERY_BROKER_URL="rediss://:pw@redis.example.com:6380/0")

    result = manage(env, "check")

    assert result.returncode != 0
    assert "rediss:// without ssl_cert_reqs" in result.stderr
    assert "ssl_cert_reqs=required" in result.stderr


# --- the settings follow the environment -------------------------------------------------

PROBE = """
import json
from django.conf import settings as s
print(json.dumps({
    "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "SECURE_SSL_REDIRECT": s.SECURE_SSL_REDIRECT,
    "SECURE_HSTS_SECONDS": s.SECURE_HSTS_SECONDS,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": s.SECURE_HSTS_INCLUDE_SUBDOMAINS,
    "SECURE_HSTS_PRELOAD": s.SECURE_HSTS_PRELOAD,
    "SESSION_COOKIE_SECURE": s.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": s.CSRF_COOKIE_SECURE,
    "SECURE_PROXY_SSL_HEADER": s.SECURE_PROXY_SSL_HEADER,
    "CSRF_TRUSTED_ORIGINS": s.CSRF_TRUSTED_ORIGINS,
    "staticfiles": s.STORAGES["staticfiles"]["BACKEND"],
}))
"""

DEVELOPMENT = {
    "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "[::1]", "testserver"],
    "SECURE_SSL_REDIRECT": False,
    "SECURE_HSTS_SECONDS": 0,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
    "SECURE_HSTS_PRELOAD": False,
    "SESSION_COOKIE_SECURE": False,
    "CSRF_COOKIE_SECURE": False,
    "SECURE_PROXY_SSL_HEADER": None,
    "CSRF_TRUSTED_ORIGINS": [],
    "staticfiles": "django.contrib.staticfiles.storage.StaticFilesStorage",
}
PRODUCTION = {
    "ALLOWED_HOSTS": [HOST],
    "SECURE_SSL_REDIRECT": True,
    "SECURE_HSTS_SECONDS": 31_536_000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "SECURE_PROXY_SSL_HEADER": None,
    "CSRF_TRUSTED_ORIGINS": [],
    "staticfiles": "whitenoise.storage.CompressedManifestStaticFilesStorage",
}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"DJANGO_DEBUG": "1", "DJANGO_ALLOWED_HOSTS": None}, DEVELOPMENT, id="development defaults"),
        pytest.param({}, PRODUCTION, id="production defaults"),
        pytest.param(
            {
                "DJANGO_ALLOWED_HOSTS": "example.com, www.example.com",
                "DJANGO_SECURE_SSL_REDIRECT": "0",
                "DJANGO_SECURE_HSTS_SECONDS": "3600",
                "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "no",
                "DJANGO_SECURE_HSTS_PRELOAD": "off",
                "DJANGO_SECURE_COOKIES": "false",
                "DJANGO_SECURE_PROXY_SSL_HEADER": "1",
                "DJANGO_CSRF_TRUSTED_ORIGINS": "https://example.com,https://www.example.com",
            },
            {
                **PRODUCTION,
                "ALLOWED_HOSTS": ["example.com", "www.example.com"],
                "SECURE_SSL_REDIRECT": False,
                "SECURE_HSTS_SECONDS": 3600,
                "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
                "SECURE_HSTS_PRELOAD": False,
                "SESSION_COOKIE_SECURE": False,
                "CSRF_COOKIE_SECURE": False,
                "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
                "CSRF_TRUSTED_ORIGINS": ["https://example.com", "https://www.example.com"],
            },
            id="production, each one set",
        ),
    ],
)
def test_security_settings_follow_the_environment(
    tmp_path: Path, env: dict[str, str | None], expected: dict[str, object]
) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=production_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == expected


def test_whitenoise_comes_right_after_the_security_middleware() -> None:
    assert settings.MIDDLEWARE[:2] == [
        "django.middleware.security.SecurityMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
    ]


def test_the_web_container_collects_static_files_and_runs_gunicorn() -> None:
    script = (REPO / "compose" / "start-web").read_text()
    collect = script.index("python manage.py collectstatic --noinput")
    serve = script.index("exec gunicorn project.wsgi:application --bind 0.0.0.0:8000")
    assert script.index("python manage.py migrate --noinput") < collect < serve
    assert "runserver" not in script


# --- gunicorn and whitenoise, for real ---------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    static_root: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gunicorn with a production environment behind a (pretended) TLS proxy, after migrate and collectstatic."""
    directory = tmp_path_factory.mktemp("deploy")
    env = production_env(
        directory,
        DJANGO_SECURE_PROXY_SSL_HEADER="1",
        # Its own keys under this run's prefix: what the sign-up below publishes
        # stays out of the queues other tests' workers consume, and is deleted at the end.
        REDIS_KEY_PREFIX=f"{os.environ['REDIS_KEY_PREFIX']}deploy-{uuid.uuid4().hex[:6]}:",
    )
    for command in (("migrate", "--noinput"), ("collectstatic", "--noinput")):
        result = manage(env, *command)
        assert result.returncode == 0, result.stdout + result.stderr
    port = _free_port()
    log = directory / "gunicorn.log"
    command = [
        *(sys.executable, "-m", "gunicorn", "project.wsgi:application"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket"),
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer:\n{log.read_text()[-3000:]}")
            try:
                requests.get(f"http://127.0.0.1:{port}/signup/", timeout=2, allow_redirects=False)
                break
            # Refused while it binds, or slow to answer its first request on a loaded machine:
            # either way, ask again until the deadline.
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        yield Server(url=f"http://127.0.0.1:{port}", static_root=directory / "var" / "static", log=log)
    finally:
        _stop(process)


def get(server: Server, path: str, *, https: bool = True, **headers: str) -> requests.Response:
    """GET through gunicorn as the TLS proxy would forward it (``X-Forwarded-Proto: https``), or as plain HTTP."""
    sent = {"Host": HOST, **({"X-Forwarded-Proto": "https"} if https else {}), **headers}
    return requests.get(server.url + path, headers=sent, timeout=10, allow_redirects=False)


@pytest.mark.slow
def test_gunicorn_serves_the_signup_page_over_https_with_hsts(gunicorn: Server) -> None:
    response = get(gunicorn, "/signup/")

    assert response.status_code == 200, gunicorn.log.read_text()[-3000:]
    assert response.headers["Server"] == "gunicorn"
    assert b"csrfmiddlewaretoken" in response.content
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert re.search(r"csrftoken=[^;]+;.*\bSecure\b", response.headers["Set-Cookie"])
    # the page links the static file by its hashed name
    assert re.search(rb'href="/static/site\.[0-9a-f]{12}\.css"', response.content)


@pytest.mark.slow
def test_plain_http_is_redirected_to_https_but_the_probes_are_not(gunicorn: Server) -> None:
    response = get(gunicorn, "/signup/?next=1", https=False)

    assert response.status_code == 301
    assert response.headers["Location"] == f"https://{HOST}/signup/?next=1"
    assert get(gunicorn, "/healthz", https=False).status_code == 200


@pytest.mark.slow
def test_another_host_name_is_refused(gunicorn: Server) -> None:
    assert get(gunicorn, "/signup/", Host="evil.example").status_code == 400


@pytest.mark.slow
def test_whitenoise_serves_hashed_static_files_for_ever_and_compressed(gunicorn: Server) -> None:
    manifest = json.loads((gunicorn.static_root / "staticfiles.json").read_text())
    hashed = manifest["paths"]["site.css"]

    response = get(gunicorn, f"/static/{hashed}", **{"Accept-Encoding": "gzip"})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "max-age=315360000, public, immutable"
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.content == (gunicorn.static_root / hashed).read_bytes()  # requests decompressed it
    # the unhashed name is served too, but may change: a short cache
    plain = get(gunicorn, "/static/site.css")
    assert plain.status_code == 200
    assert "immutable" not in plain.headers["Cache-Control"]


@pytest.mark.slow
def test_the_dev_inbox_does_not_exist_in_production(gunicorn: Server) -> None:
    assert get(gunicorn, "/dev/inbox/").status_code == 404


@pytest.mark.slow
def test_a_signup_through_gunicorn_passes_csrf_and_sets_secure_cookies(gunicorn: Server) -> None:
    # given the form, and its CSRF cookie (Secure: a client sends it back only over HTTPS, as the proxy's client does)
    form = get(gunicorn, "/signup/")
    cookie = re.search(r"csrftoken=([^;]+)", form.headers["Set-Cookie"]).group(1)  # type: ignore[union-attr]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    password = "a long enough passphrase 42"
    data = {"csrfmiddlewaretoken": token, "email": "prod@example.com", "password": password}
    data["password_confirm"] = password
    headers = {
        "Host": HOST,
        "X-Forwarded-Proto": "https",
        "Cookie": f"csrftoken={cookie}",
        "Origin": f"https://{HOST}",
        "Referer": f"https://{HOST}/signup/",
    }

    # when a page of another origin posts the same form, then CSRF refuses it
    foreign = {**headers, "Origin": "https://evil.example", "Referer": "https://evil.example/"}
    refused = requests.post(gunicorn.url + "/signup/", data=data, headers=foreign, timeout=30, allow_redirects=False)
    assert refused.status_code == 403

    # when the page itself posts it, then the sign-up goes through
    response = requests.post(gunicorn.url + "/signup/", data=data, headers=headers, timeout=30, allow_redirects=False)
    assert response.status_code == 302, response.text[-2000:]
    assert response.headers["Location"] == "/signup/status/"
    session = next(c for c in response.raw.headers.getlist("Set-Cookie") if c.startswith("sessionid="))
    assert "; Secure" in session and "; HttpOnly" in session
