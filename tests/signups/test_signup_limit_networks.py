"""The sign-up limit's client: an IPv4 address, or an IPv6 address's /64 network (signups/throttle.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from signups.throttle import client_key
from tests.factories import sign_up_via_client


@pytest.mark.parametrize(
    ("remote_addr", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::7", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::7", "2001:db8:1:3::/64"),
        ("2001:DB8:1:2:0:0:0:7", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", "unknown"),
        ("not an address", "not an address"),
    ],
)
def test_the_limit_keys_on_ipv4_addresses_and_ipv6_64_networks(remote_addr: str, key: str) -> None:
    assert client_key(remote_addr) == key


@pytest.mark.django_db
def test_addresses_of_one_ipv6_64_share_one_budget_and_another_64_has_its_own(settings: Any) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/m"
    settings.SIGNUP_RATE_BURST = 2
    # Distinct per test run: the buckets live in Redis under the run's key prefix.
    network = "2001:db8:23:64"

    statuses = [sign_up_via_client(Client(REMOTE_ADDR=f"{network}::{n:x}")).status_code for n in (1, 0xBEEF, 0xFFFF)]
    elsewhere = sign_up_via_client(Client(REMOTE_ADDR="2001:db8:23:65::1")).status_code

    assert statuses == [302, 302, 429]
    assert elsewhere == 302


@pytest.mark.django_db
def test_an_ipv4_mapped_address_shares_the_ipv4_addresses_budget(settings: Any) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/m"
    settings.SIGNUP_RATE_BURST = 1

    plain = sign_up_via_client(Client(REMOTE_ADDR="198.51.100.23")).status_code
    mapped = sign_up_via_client(Client(REMOTE_ADDR="::ffff:198.51.100.23")).status_code

    assert (plain, mapped) == (302, 429)
