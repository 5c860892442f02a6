"""Logged-in clients for the ops pages: staff accounts holding exactly the model permissions a test names."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission
from django.test import Client

from ops.views.access import PURGE_DEAD_LETTERS, REPLAY_DEAD_LETTERS, VIEW_DEAD_LETTERS, VIEW_EVENTS

EVERY_OPS_PERMISSION = (VIEW_DEAD_LETTERS, REPLAY_DEAD_LETTERS, PURGE_DEAD_LETTERS, VIEW_EVENTS)


def staff_user(user_model: Any, *permissions: str, username: str = "olga") -> Any:
    """An active staff user (not a superuser) holding ``permissions`` (``"app_label.codename"``) and no other."""
    user = user_model.objects.create_user(username, password="x", is_staff=True)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def staff_client(user_model: Any, *permissions: str, username: str = "olga") -> Client:
    """A fresh client logged in as ``staff_user(...)``."""
    client = Client()
    client.force_login(staff_user(user_model, *permissions, username=username))
    return client
