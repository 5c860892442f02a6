"""Who an email goes to: a user's address, read with one SELECT whose SQL is made once per database.

``User.objects.filter(pk=...).first()`` compiled a queryset and built a
model instance for every email, about ten times what the database took to
answer (figure 1 of docs/benchmarks.md); the email needs the address only.
The user model is the project's (``get_user_model()``), its email field
whatever ``get_email_field_name()`` says.
"""

from __future__ import annotations

from functools import lru_cache

from django.contrib.auth import get_user_model
from django.db import connections


def address_of(user_id: int, using: str = "default") -> str | None:
    """The user's email address; None when the account is gone."""
    connection = connections[using]
    pk = get_user_model()._meta.pk
    with connection.cursor() as cursor:
        cursor.execute(_address_sql(connection.alias), [pk.get_db_prep_value(user_id, connection)])
        row = cursor.fetchone()
    return None if row is None else str(row[0])


@lru_cache(maxsize=8)
def _address_sql(alias: str) -> str:
    user = get_user_model()
    meta = user._meta
    quote = connections[alias].ops.quote_name
    email = quote(meta.get_field(user.get_email_field_name()).column)
    return f"SELECT {email} FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} = %s"
