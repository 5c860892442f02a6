"""The whole journey of a person, in a real browser, against the real system.

Sign up (a bad form first), watch the status page update itself as the
workers send the welcome email and record analytics, open the email in the
dev inbox, click its link, see the funnel count the verification, and find
the operators' pages closed to an anonymous visitor. A screenshot of each
step is saved for a person to look at.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pytest
from django.urls import Resolver404, resolve

from project import queues
from tests.browser.conftest import ACTION_TIMEOUT_MS, Site
from tests.conftest import running_worker
from tests.factories import PASSWORD

try:
    from playwright.sync_api import Browser, Locator, Page, expect
except ImportError:  # a virtualenv older than requirements-dev.txt
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "playwright is not installed: `make install-dev` installs requirements-dev.txt", allow_module_level=True
    )

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

# The workers' effects show on the pages within this time, or the test fails.
EVENTUAL_MS = 20_000
OPS_PAGES = ["/ops/", "/ops/deadletters/", "/ops/events/"]


class Shots:
    """Numbered full-page screenshots in one folder, in the order they were taken."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def __call__(self, page: Page, name: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def delivery(page: Page, subscriber: str) -> Locator:
    """One line of the status page, e.g. "welcome email: sent"."""
    return page.locator(f'li.delivery[data-subscriber="{subscriber}"]')


def existing_ops_pages() -> list[str]:
    """The ops pages the URLconf has now (others are still being written)."""
    found = []
    for path in OPS_PAGES:
        try:
            resolve(path)
        except Resolver404:
            continue
        found.append(path)
    return found


def test_sign_up_verify_and_see_it_counted(site: Site, browser: Browser, page: Page, screenshot_dir: Path) -> None:
    shot = Shots(screenshot_dir)
    email = f"journey-{uuid.uuid4().hex[:8]}@example.com"

    # given: the sign-up page
    page.goto(site.at("/signup/"))
    expect(page.locator("h1")).to_have_text("Sign up")
    shot(page, "signup")

    # when: a bad form is sent
    page.fill("#id_email", "not-an-email")
    page.fill("#id_password", PASSWORD)
    page.fill("#id_password_confirm", PASSWORD + " but different")
    with page.expect_response(lambda r: r.url.endswith("/signup/") and r.request.method == "POST") as posted:
        page.click("button[type=submit]")
    # then: 400, and each broken rule next to its field
    assert posted.value.status == 400
    expect(page.locator("#email-errors")).to_contain_text("Enter a valid email address.")
    expect(page.locator("#password_confirm-errors")).to_contain_text("The two passwords differ.")
    expect(page.locator(".field.invalid")).to_have_count(2)
    shot(page, "signup-errors")

    # when: a good one is sent (no worker runs yet, so the deliveries wait on the queues)
    page.fill("#id_email", email)
    page.fill("#id_password", PASSWORD)
    page.fill("#id_password_confirm", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(site.at("/signup/status/"))
    expect(page.locator("h1")).to_have_text(f"Welcome, {email}")
    welcome = delivery(page, "notifications.send_welcome_email")
    analytics = delivery(page, "analytics.record_event")
    expect(welcome).to_have_text("welcome email: queued")
    expect(analytics).to_have_text("analytics: queued")
    page.evaluate("window.__marker = 1")
    shot(page, "status-queued")

    with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS):
        # then: the page updates by itself, without a reload
        expect(welcome).to_have_text("welcome email: sent", timeout=EVENTUAL_MS)
        expect(analytics).to_have_text("analytics: recorded", timeout=EVENTUAL_MS)
        assert page.evaluate("window.__marker") == 1, "the status page reloaded instead of updating itself"
        shot(page, "status-done")

        # when: the person opens the welcome email in the dev inbox
        page.goto(site.at("/dev/inbox/"))
        row = page.locator("table.inbox-list tbody tr", has_text=email)
        expect(row).to_have_count(1)
        shot(page, "inbox")
        row.get_by_role("link", name="Welcome! Please verify your email address").click()
        expect(page.locator("h1")).to_have_text("Welcome! Please verify your email address")
        link = page.locator("#text-part a", has_text="/signup/verify/")
        expect(link).to_have_count(1)
        href = link.get_attribute("href") or ""
        assert href.startswith(site.at("/signup/verify/")), href
        # the HTML part, in its sandboxed frame, carries the same link
        expect(page.frame_locator("iframe").locator("#verify-link")).to_have_attribute("href", href)
        shot(page, "welcome-email")

        # and clicks the verification link
        link.click()
        page.wait_for_url(lambda url: url == href)
        expect(page.locator("h1")).to_have_text("Email verified")
        expect(page.locator("main")).to_contain_text(f"Thank you: {email} is verified.")
        shot(page, "verified")

        # then: the analytics worker counts it a moment later
        page.goto(site.at("/analytics/"))
        verified = page.locator("#funnel-verified")
        deadline = time.monotonic() + EVENTUAL_MS / 1000
        while verified.inner_text() != "1" and time.monotonic() < deadline:
            page.wait_for_timeout(300)
            page.reload()
        expect(verified).to_have_text("1", timeout=1_000)
        expect(page.locator("#funnel-signed-up")).to_have_text("1")
        expect(page.locator("#funnel-rate")).to_have_text("100%")
        expect(page.locator("svg.chart rect.bar.verifications:not([height='0.0'])")).to_have_count(1)
        expect(page.locator("svg.chart rect.bar.signups:not([height='0.0'])")).to_have_count(1)
        shot(page, "analytics")

    # and: an anonymous visitor is sent to sign in on every ops page there is
    ops_pages = existing_ops_pages()
    assert "/ops/deadletters/" in ops_pages
    anonymous = browser.new_context()
    anonymous.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        visitor = anonymous.new_page()
        for path in ops_pages:
            response = visitor.goto(site.at(path))
            assert response is not None and response.ok
            redirect = response.request.redirected_from
            assert redirect is not None and redirect.url == site.at(path), f"{path} did not redirect"
            first = redirect.response()
            assert first is not None and first.status == 302
            expect(visitor).to_have_url(re.compile(re.escape(site.at("/accounts/login/?next=") + path) + "$"))
            expect(visitor.locator("#id_username")).to_be_visible()
            shot(visitor, "login-for-" + path.strip("/").replace("/", "-"))
    finally:
        anonymous.close()
