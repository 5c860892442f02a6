"""A destructive action stands apart and asks before it acts: Purge on the dead-letter pages, in a real browser.

Purge is styled unlike Replay (red, in its own red-edged box), and its
button asks the browser to confirm: dismissed, nothing is sent and the dead
letter stays; accepted, it is gone. (The server's confirmation box is
tests/deadletters/test_deadletters_web.py's.)
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from eventbus.models import DeadLetter
from tests.browser.conftest import Site
from tests.deadletters.test_deadletters import dead_letter
from tests.factories import PASSWORD

try:
    from playwright.sync_api import Dialog, Page, expect
except ImportError:  # a virtualenv older than requirements-dev.txt
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "playwright is not installed: `make install-dev` installs requirements-dev.txt", allow_module_level=True
    )

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def sign_in(page: Page, site: Site, next_path: str) -> None:
    page.goto(site.at(f"/accounts/login/?next={next_path}"))
    page.fill("#id_username", "purger")
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(site.at(next_path))


def colour(page: Page, selector: str) -> str:
    return page.locator(selector).evaluate("el => getComputedStyle(el).color")


def test_purge_looks_apart_and_asks_before_it_deletes(site: Site, page: Page, django_user_model: Any) -> None:
    django_user_model.objects.create_superuser("purger", "purger@example.com", PASSWORD)
    row = dead_letter()
    sign_in(page, site, "/ops/deadletters/")

    # given: Purge does not look like Replay
    purge, replay = "#purge button.danger", "button:has-text('Replay')"
    assert colour(page, purge) != colour(page, replay)
    expect(page.locator("fieldset#purge legend")).to_have_text("Purge the selected dead letters")

    # when: the person selects the row, ticks the box, clicks Purge and then says no
    page.check(f"input[name=ids][value='{row.pk}']")
    page.check("#purge_confirm")
    asked: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click(purge)

    # then: nothing was sent
    assert asked == ["Delete the selected dead letters for good?"]
    assert DeadLetter.objects.filter(pk=row.pk).exists()

    # when: they say yes
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click(purge)

    # then: it is gone
    expect(page.locator("main")).to_contain_text("Purged 1 dead letter.")
    assert not DeadLetter.objects.filter(pk=row.pk).exists()
