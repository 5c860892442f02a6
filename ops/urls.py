"""Operators' pages, for staff with the model permission each page asks for (ops/views/access.py)."""

from django.urls import path

from ops.views import deadletters as views
from ops.views import failures as failure_views
from ops.views import overview as overview_views
from ops.views import timeline as timeline_views

app_name = "ops"

urlpatterns = [
    path("", overview_views.overview, name="overview"),
    path("overview.json", overview_views.overview_json, name="overview-json"),
    path("deadletters/", views.dead_letter_list, name="deadletters"),
    path("deadletters/replay/", views.dead_letter_replay, name="deadletter-replay"),
    path("deadletters/purge/", views.dead_letter_purge, name="deadletter-purge"),
    path("deadletters/<uuid:pk>/", views.dead_letter_detail, name="deadletter"),
    path("events/", timeline_views.event_list, name="events"),
    path("events/<uuid:pk>/", timeline_views.event_detail, name="event"),
    # The failure panel (DJANGO_DEBUG on only): ops/views/failures.py.
    path("failures/provider/", failure_views.provider_down, name="failures-provider"),
    path("failures/queue/", failure_views.pause_queue, name="failures-queue"),
    path("failures/flood/", failure_views.flood_queue, name="failures-flood"),
    path("failures/heal/", failure_views.heal, name="failures-heal"),
]
