"""Forms of the dead-letter ops pages: the list's filters and the replay and purge actions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django import forms

from eventbus.contract import catalogue, registry
from eventbus.deadletters.parsing import parse_duration
from eventbus.models import DeadLetter


def _choices(values: set[str], blank: str) -> list[tuple[str, str]]:
    return [("", blank)] + [(v, v) for v in sorted(values) if v]


class AgeField(forms.CharField):
    """An age typed like ``2h`` or ``3d``, cleaned to a timedelta."""

    def to_python(self, value: Any) -> timedelta | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


class DeadLetterFilterForm(forms.Form):
    """The list's filters, read from the query string; the same as ``filter_dead_letters``' arguments."""

    subscriber = forms.ChoiceField(required=False)
    event_type = forms.ChoiceField(required=False, label="Event type")
    kind = forms.ChoiceField(required=False, choices=[("", "any"), *DeadLetter.Kind.choices])
    older_than = AgeField(required=False, label="Older than", help_text="e.g. 2h, 3d")
    newer_than = AgeField(required=False, label="Newer than", help_text="e.g. 30m, 1d")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Declared names, plus whatever the stored rows name (a subscriber since renamed).
        stored = DeadLetter.objects.values_list("subscriber", "event_type").distinct()
        subscribers = {s.name for s in registry.all_subscriptions()} | {s for s, _ in stored}
        event_types = {t.name for t in catalogue.all_types()} | {t for _, t in stored}
        self.fields["subscriber"].choices = _choices(subscribers, "any")
        self.fields["event_type"].choices = _choices(event_types, "any")

    def filters(self) -> dict[str, Any]:
        """Keyword arguments for ``filter_dead_letters``; none when the form is invalid."""
        if not self.is_valid():
            return {}
        return {name: value for name, value in self.cleaned_data.items() if value}


class ReplayForm(forms.Form):
    subscriber = forms.ChoiceField(
        required=False, label="Replay to", help_text="blank: the subscriber each dead letter came from"
    )
    dry_run = forms.BooleanField(required=False, label="Dry run (send nothing)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The list page shows the filter form too, which also has a "subscriber" field: keep HTML ids apart.
        kwargs.setdefault("auto_id", "replay_%s")
        super().__init__(*args, **kwargs)
        self.fields["subscriber"].choices = _choices({s.name for s in registry.all_subscriptions()}, "its own")


class PurgeForm(forms.Form):
    # Shares an HTML form with the replay fields on the list page: a browser-side
    # "required" would block the Replay button too; the server checks it instead.
    use_required_attribute = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "purge_%s")
        kwargs.setdefault("label_suffix", "")  # the label follows the checkbox
        super().__init__(*args, **kwargs)

    confirm = forms.BooleanField(required=True, label="Yes, delete them for good")


def selected_ids(values: list[str]) -> list[uuid.UUID]:
    """The posted dead-letter ids that are UUIDs; anything else is ignored."""
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    return ids
