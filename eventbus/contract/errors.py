"""Exceptions of the event bus."""

from __future__ import annotations


class EventDeclarationError(Exception):
    """An event type or subscriber is declared wrongly; raised at import, so it fails loudly."""


class PoisonMessage(Exception):
    """A message that can never be processed: bad JSON, a broken envelope, an unknown type or version.

    Retrying cannot help, so it is never retried.
    """


class PermanentError(Exception):
    """Raised by a handler for a failure that retrying will not fix (a 4xx-like answer)."""
