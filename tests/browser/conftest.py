"""Fixtures for the real-browser tests: Debian's Chromium driven by Playwright, against a live server.

The site is served for real (pytest-django's ``live_server``: Django in a
thread on a real port) with DEBUG on, so the dev inbox exists, an SMTP sink
that stores each message where the dev inbox reads it, and the verification
link pointing back at the live server. The test starts the Celery worker
itself, when the journey needs it.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from django.conf import settings as django_settings
from django.urls import clear_url_caches, set_urlconf

from devinbox.sink import SmtpSink
from tests.conftest import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# Debian's Chromium, never a browser build of Playwright's own.
CHROMIUM_FALLBACK = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling home, which a
# closed network answers with nothing but time-outs.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000
# Every Playwright action and assertion waits at most this long unless it says otherwise.
ACTION_TIMEOUT_MS = 10_000


def find_chromium() -> str | None:
    path = shutil.which("chromium") or CHROMIUM_FALLBACK
    return path if os.access(path, os.X_OK) else None


def _unavailable(reason: str) -> NoReturn:
    """CI must run the browser tests: there a missing piece fails; elsewhere it skips."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser tests)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = find_chromium()
    if path is None:
        _unavailable(
            "chromium is neither on the PATH nor at /usr/bin/chromium, and was not installed: "
            "run `make test` as root (it installs Debian's chromium package) or `apt-get install -y chromium`"
        )
    return path


@pytest.fixture
def browser(chromium_executable: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """Chromium, headless, for one test; closed (and Playwright stopped) before the database is flushed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: `make install-dev` installs requirements-dev.txt")
    # Playwright's sync API parks an asyncio event loop in this thread while it
    # runs, and Django refuses ORM calls in a thread with a running loop
    # (SynchronousOnlyOperation), though the test's calls are plain synchronous
    # ones. Allowed for this test only: the variable is gone before teardown
    # flushes the database.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) and a page in it, closed after the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def screenshot_dir() -> Path:
    """``$SCREENSHOT_DIR/journey`` or var/screenshots/journey/ in the repository, with last run's pictures removed."""
    directory = Path(os.environ.get("SCREENSHOT_DIR") or REPO / "var" / "screenshots") / "journey"
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("[0-9][0-9]-*.png"):
        old.unlink()
    print(f"\nscreenshots: {directory}")
    return directory


def _reload_root_urlconf() -> None:
    # project/urls.py adds the dev inbox only if DEBUG is on when it is imported.
    importlib.reload(importlib.import_module(django_settings.ROOT_URLCONF))
    clear_url_caches()
    set_urlconf(None)


@pytest.fixture
def debug_urls(settings: Any) -> Iterator[None]:
    """DEBUG on (pytest-django turns it off) and the root URLconf re-read with it; both restored after."""
    was = settings.DEBUG
    settings.DEBUG = True
    _reload_root_urlconf()
    try:
        yield
    finally:
        settings.DEBUG = was
        _reload_root_urlconf()


@pytest.fixture
def inbox_sink(settings: Any, tmp_path: Path) -> Iterator[SmtpSink]:
    """A real SMTP server that stores each message where the dev inbox reads it."""
    directory = tmp_path / "mail"
    with SmtpSink(port=0, directory=directory) as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = sink.port
        settings.DEVINBOX_DIR = directory
        yield sink


@dataclass(frozen=True)
class Site:
    url: str
    sink: SmtpSink

    def at(self, path: str) -> str:
        return self.url + path


@pytest.fixture
def site(live_server: Any, settings: Any, debug_urls: None, inbox_sink: SmtpSink, broker: None) -> Site:
    """The live server, its email going to ``inbox_sink`` and its links pointing back at it; queues empty."""
    settings.SITE_URL = live_server.url
    return Site(url=live_server.url, sink=inbox_sink)
