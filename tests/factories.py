"""Small helpers that build test data through the real code paths."""

from __future__ import annotations

import itertools
from typing import Any

from django.test import Client

_counter = itertools.count(1)

PASSWORD = "a long enough passphrase 42"


def unique_email() -> str:
    return f"user{next(_counter)}@example.com"


def sign_up_via_client(client: Client, email: str | None = None, password: str = PASSWORD) -> Any:
    email = email or unique_email()
    response = client.post("/signup/", {"email": email, "password": password, "password_confirm": password})
    return response


def navigation(page: str) -> str:
    """The site header's menu of a page's HTML (templates/base.html): what the page's own text does not say."""
    return page[page.index('<header class="site">') : page.index("</header>")]
