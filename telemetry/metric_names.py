"""At most TELEMETRY_MAX_METRICS_PER_DEVICE metric names per device; the names it has keep working.

Every name is a rollup row for each minute it is used and a series on the
dashboard: a device that invents names (a bug that puts a counter in the
name, a hostile client) would otherwise create up to 500 new ones per
request, for ever. A request that would take its device past the limit is refused whole,
409 (telemetry/api.py), like the API's other refusals.

Cheap: one indexed lookup of the batch's names per request, and nothing else
while they are all known. Only a batch that brings a new name locks its
device's row (FOR NO KEY UPDATE on PostgreSQL, which the readings' foreign
key checks do not wait for; SQLite's IMMEDIATE transaction already holds the
database's write lock), counts the device's names (one index range, no
longer than the limit: never the readings) and records the new ones, in the
transaction that records the readings. Exact: two requests that bring new
names to the same device take turns, so neither overshoots the limit.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

from telemetry.models import Device, DeviceMetric


class TooManyMetrics(Exception):
    """The request's new metric names would take its device past TELEMETRY_MAX_METRICS_PER_DEVICE."""

    def __init__(self, limit: int, used: int, new: list[str]) -> None:
        self.limit, self.used, self.new = limit, used, new
        super().__init__(
            f"this device may use at most {limit} metric names (TELEMETRY_MAX_METRICS_PER_DEVICE); "
            f"it has {used}, and this request brings {len(new)} new"
        )


def admit(device: Device, names: Iterable[str]) -> None:
    """Record the names new to ``device``, or raise TooManyMetrics and record none.

    Call it inside the transaction that records the readings: a refused or
    rolled-back request leaves no name behind.
    """
    new = _unknown(device, set(names))
    if not new:
        return
    # Take turns with the device's other requests that bring new names, then
    # look again: one of them may have recorded some of ours meanwhile.
    list(Device.objects.select_for_update(no_key=True).filter(pk=device.pk).values_list("pk", flat=True))
    new = _unknown(device, new)
    if not new:
        return
    limit = settings.TELEMETRY_MAX_METRICS_PER_DEVICE
    used = DeviceMetric.objects.filter(device=device).count()
    if used + len(new) > limit:
        raise TooManyMetrics(limit, used, sorted(new))
    DeviceMetric.objects.bulk_create([DeviceMetric(device=device, name=name) for name in sorted(new)])


def _unknown(device: Device, names: set[str]) -> set[str]:
    known = DeviceMetric.objects.filter(device=device, name__in=names).values_list("name", flat=True)
    return names - set(known)
