"""Every page fits its window: no horizontal overflow at a laptop's 1280 px nor a phone's 390 px.

A real Chromium walks the tour (home, sign-up, its status, verification and
resend pages, analytics, sign-in, the operators' pages, the dev inbox,
telemetry, the event catalogue, the admin's index and outbox) with data
on every page, measures ``document.documentElement.scrollWidth`` against the
window's width, and keeps a full-page screenshot of each page at each width
(``$SCREENSHOT_DIR/layout/``, else var/screenshots/layout/) for a person to
look at. A table too wide for a phone may scroll inside its own box; the page
itself never does, and a date in a table keeps to one line.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from eventbus.models import OutboxEvent
from notifications.emails import send_welcome_email
from signups.verification import verification_url
from telemetry import tokens
from telemetry.models import Rollup
from tests.browser.conftest import Site
from tests.conftest import REPO
from tests.deadletters.test_deadletters import dead_letter
from tests.factories import PASSWORD

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # a virtualenv older than requirements-dev.txt
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "playwright is not installed: `make install-dev` installs requirements-dev.txt", allow_module_level=True
    )

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]

WIDTHS = {"laptop": (1280, 800), "phone": (390, 844)}

# What sticks out past the window's right edge: the outermost such elements, for the failure message.
MEASURE = """() => {
  const width = window.innerWidth;
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (out.length >= 5) break;
    const right = el.getBoundingClientRect().right;
    const parent = el.parentElement;
    if (right > width + 0.5 && !(parent && parent.getBoundingClientRect().right > width + 0.5)) {
      out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' to ' + Math.round(right) + 'px');
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, out: out};
}"""


# Dates (cells marked ``.when``) that a narrow column broke over more than one line.
WRAPPED_DATES = """() => Array.from(document.querySelectorAll('.when')).filter(el => {
  const range = document.createRange();
  range.selectNodeContents(el);
  return new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top))).size > 1;
}).map(el => el.textContent.trim())"""


@pytest.fixture
def layout_screenshots() -> Path:
    """``$SCREENSHOT_DIR/layout`` or var/screenshots/layout/ in the repository."""
    root = Path(os.environ.get("SCREENSHOT_DIR") or REPO / "var" / "screenshots")
    directory = root / "layout"
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {directory}")
    return directory


def overflow(page: Page) -> str | None:
    """None when the page fits its window; otherwise what sticks out, and by how much."""
    measured: dict[str, Any] = page.evaluate(MEASURE)
    if measured["scrollWidth"] <= measured["innerWidth"]:
        return None
    return f"{measured['scrollWidth']}px wide in {measured['innerWidth']}px: {', '.join(measured['out'])}"


def telemetry_readings() -> None:
    """Half an hour of per-minute rollups for one device and metric, as the telemetry workers write them."""
    device, _ = tokens.register("layout-sensor")
    now = timezone.now().replace(second=0, microsecond=0)
    for minutes_ago in range(30):
        value = 20.0 + (minutes_ago % 7)
        Rollup.objects.create(
            device=device,
            metric="temperature",
            minute=now - timedelta(minutes=minutes_ago),
            count=4,
            total=value * 4,
            minimum=value - 1.5,
            maximum=value + 2.0,
            updated_at=now,
        )


@pytest.mark.parametrize("width", WIDTHS, ids=list(WIDTHS))
def test_every_page_fits_the_window(
    width: str, site: Site, browser: Browser, layout_screenshots: Path, django_user_model: Any
) -> None:
    # given: a signed-up person, their event, a dead letter, a welcome email, telemetry, and a superuser
    email = f"layout-{uuid.uuid4().hex[:8]}@example.com"
    django_user_model.objects.create_superuser("layout-admin", "layout-admin@example.com", PASSWORD)
    telemetry_readings()
    dead_letter()
    context = browser.new_context(viewport=dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    context.set_default_timeout(10_000)
    page = context.new_page()
    misfits: list[str] = []

    def visit(name: str, url: str | None = None) -> None:
        if url is not None:
            response = page.goto(site.at(url) if url.startswith("/") else url)
            assert response is not None and response.ok, f"{name}: {response and response.status}"
        page.screenshot(path=str(layout_screenshots / f"{width}-{name}.png"), full_page=True)
        if (wrong := overflow(page)) is not None:
            misfits.append(f"{name} ({page.url}): {wrong}")
        if wrapped := page.evaluate(WRAPPED_DATES):
            misfits.append(f"{name}: dates over more than one line: {wrapped}")

    try:
        # when: a visitor signs up, sees the status page, verifies, and opens the sign-in page
        visit("home", "/")
        visit("signup", "/signup/")
        page.fill("#id_email", email)
        page.fill("#id_password", PASSWORD)
        page.fill("#id_password_confirm", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(site.at("/signup/status/"))
        visit("status")
        user = get_user_model().objects.get(email=email)
        event = OutboxEvent.objects.get(type="user.signed_up", aggregate=f"user:{user.pk}")
        send_welcome_email(user.pk, email, event_id=event.id)
        visit("verify", verification_url(user.pk, email))
        visit("resend", "/signup/verify/resend/")
        visit("analytics", "/analytics/")
        visit("signin", "/accounts/login/")

        # and an operator signs in and walks the rest
        page.fill("#id_username", "layout-admin")
        page.fill("#id_password", PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(site.at("/"))
        visit("ops-overview", "/ops/")
        if width == "laptop":
            # every subscriber's column, "dead letters stored" among the rows, in sight without scrolling
            for header in page.locator("#subscribers thead th").all():
                box = header.bounding_box()
                if box is None or box["x"] + box["width"] > WIDTHS[width][0]:
                    misfits.append(f"ops-overview: the subscribers' column {header.inner_text()!r} is out of sight")
            expect(page.locator("#subscribers")).to_contain_text("Dead letters stored")
        visit("ops-events", "/ops/events/")
        visit("ops-event", f"/ops/events/{event.id}/")
        # the timeline's picture: the outbox's lane and one per subscriber, queued marks in each
        expect(page.locator("#timeline-picture g.lane")).to_have_count(3)
        expect(page.locator("#timeline-picture circle.mark.queued")).to_have_count(3)
        visit("ops-deadletters", "/ops/deadletters/")
        page.locator("table.deadletters a").first.click()
        visit("ops-deadletter")
        visit("inbox", "/dev/inbox/")
        page.locator("table.inbox-list tbody a").first.click()
        visit("inbox-message")
        # the email's <base> lives in its frame; the page has none, and no template comment shows as text
        assert page.evaluate("document.querySelectorAll('base').length") == 0
        expect(page.locator("main")).not_to_contain_text("sandboxed")
        visit("telemetry", "/telemetry/")
        visit("catalogue", "/events/")
        visit("admin", "/admin/")
        visit("admin-outbox", "/admin/eventbus/outboxevent/")
    finally:
        context.close()

    # then: none of them is wider than the window
    assert misfits == [], f"pages that do not fit {WIDTHS[width][0]}px:\n" + "\n".join(misfits)


def test_the_home_page_links_every_area_and_shows_the_data_flow(site: Site, page: Page) -> None:
    page.goto(site.at("/"))

    links = page.locator("#areas a")
    hrefs = {links.nth(i).get_attribute("href") for i in range(links.count())}

    assert {
        "/signup/",
        "/analytics/",
        "/telemetry/",
        "/dev/inbox/",
        "/ops/",
        "/ops/events/",
        "/ops/deadletters/",
    } <= hrefs
    assert {"/admin/", "/accounts/login/"} <= hrefs
    picture = page.locator("img#dataflow")
    expect(picture).to_be_visible()
    assert picture.evaluate("img => img.complete && img.naturalWidth > 0"), "the data-flow picture did not load"


def test_the_served_data_flow_picture_is_the_one_the_docs_render() -> None:
    # static/ serves a copy of docs/diagrams/dataflow.svg (`make diagrams` renders the docs' one)
    served = REPO / "static" / "diagrams" / "dataflow.svg"
    assert served.read_bytes() == (REPO / "docs" / "diagrams" / "dataflow.svg").read_bytes()
