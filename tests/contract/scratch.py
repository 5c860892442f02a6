"""A scratch catalogue for tests that declare throwaway event types and upcasters.

The catalogue is process-global (eventbus/contract/catalogue.py): a type a test
declares would stay declared for every test after it, and the start check
(``catalogue.check``) would then fail on it. ``scratch()`` keeps the catalogue
as it was and puts it back when the block ends, whatever the block declared.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from eventbus.contract import catalogue


@contextmanager
def scratch() -> Iterator[None]:
    by_name, by_class, upcasters = dict(catalogue._by_name), dict(catalogue._by_class), dict(catalogue._upcasters)
    try:
        yield
    finally:
        catalogue._by_name.clear()
        catalogue._by_name.update(by_name)
        catalogue._by_class.clear()
        catalogue._by_class.update(by_class)
        catalogue._upcasters.clear()
        catalogue._upcasters.update(upcasters)
