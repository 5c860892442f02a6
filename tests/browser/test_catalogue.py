"""The event catalogue page, in a real Chromium: every type with its fields and subscribers, and its JSON a click away.

Anyone may read it (it describes types, never an event's data), so the
browser is not signed in. The page wears the site's header (the project's
templates/eventbus/base.html frames the bus's page), and its link leads to
the AsyncAPI document the bus serves.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from eventbus.contract import catalogue, registry

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a virtualenv older than requirements-dev.txt
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "playwright is not installed: `make install-dev` installs requirements-dev.txt", allow_module_level=True
    )

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_the_catalogue_page_shows_every_event_type_and_links_its_asyncapi_document(
    live_server: Any, page: Page
) -> None:
    response = page.goto(live_server.url + "/events/")
    assert response is not None and response.ok

    expect(page.locator("header.site")).to_be_visible()
    expect(page.locator("section.event-type")).to_have_count(len(catalogue.all_types()))
    for declared in catalogue.all_types():
        section = page.locator(f'section[id="type-{declared.name}"]')
        expect(section.locator("h2")).to_contain_text(f"{declared.name} version {declared.version}")
        for subscription in registry.subscriptions_for(declared.name):
            expect(section.locator("ul.subscribers")).to_contain_text(subscription.name)
    telemetry = page.locator('section[id="type-telemetry.readings_received"]')
    expect(telemetry.locator("table.fields")).to_contain_text("array of object")
    expect(telemetry.locator(".producer")).to_have_text("telemetry")
    expect(page.locator("table.queues")).to_contain_text("telemetry.rollup")

    with page.expect_response(lambda r: r.url.endswith("/events/asyncapi.json")) as served:
        page.click("#asyncapi-link")
    assert served.value.ok
    assert json.loads(served.value.text())["asyncapi"] == "3.0.0"
