"""Indexes on the user table's case-folded username and email, for "is this address taken?".

The user model belongs to django.contrib.auth, so its indexes cannot be
declared on it from here; this migration creates them on its table with the
database's own ``lower()``, the expression ``signups.services.email_taken``
filters on. Without them every sign-up scanned the whole user table twice.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import migrations

# (index name, the user model's field)
INDEXES = (
    ("signups_user_username_lower", "username"),
    ("signups_user_email_lower", "email"),
)


def _user_table(apps: Any, schema_editor: Any) -> tuple[str, dict[str, str]]:
    user = apps.get_model(settings.AUTH_USER_MODEL)
    quote = schema_editor.quote_name
    columns = {name: quote(user._meta.get_field(name).column) for _, name in INDEXES}
    return quote(user._meta.db_table), columns


def create_indexes(apps: Any, schema_editor: Any) -> None:
    table, columns = _user_table(apps, schema_editor)
    for index, field in INDEXES:
        name = schema_editor.quote_name(index)
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} (lower({columns[field]}))")


def drop_indexes(apps: Any, schema_editor: Any) -> None:
    for index, _ in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(index)}")


class Migration(migrations.Migration):
    dependencies = [
        ("signups", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(create_indexes, drop_indexes, elidable=False)]
