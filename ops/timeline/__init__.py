"""An event's whole story, and finding events, read from the project's own records.

Everything here reads the database only: the outbox (``OutboxEvent``), the
ledger (``ProcessedEvent``), the unusual steps (``DeliveryStep``), dead letters
and their replays, and django-celery-results' ``TaskResult``. So the story
survives restarts of workers and of Flower, and these functions are plain
calls returning frozen dataclasses, testable without HTTP.

The state of each delivery comes from ``eventbus.observability.status``, the module behind
the sign-up status page, so the two pages cannot disagree about it; the steps
below it are the detail.

- ``build(event_id)``: the story of one event (``story.py``), each delivery's
  steps (``steps.py``) from its records loaded once (``records.py``);
- ``search(query)`` and ``rows(events)``: finding events (``search.py``);
- links to the TaskResult admin, Flower and the events page (``links.py``).
"""

from ops.timeline.links import TaskRef, flower_url, search_url
from ops.timeline.search import EventRow, SearchResult, rows, search
from ops.timeline.steps import TimelineStep
from ops.timeline.story import EventRef, EventTimeline, OutboxState, SubscriberStory, build

__all__ = [
    "EventRef",
    "EventRow",
    "EventTimeline",
    "OutboxState",
    "SearchResult",
    "SubscriberStory",
    "TaskRef",
    "TimelineStep",
    "build",
    "flower_url",
    "rows",
    "search",
    "search_url",
]
