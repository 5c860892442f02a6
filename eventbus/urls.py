"""The contract's stable URLs, under the host's mount (``events/`` in this project).

- ``asyncapi.json``: the AsyncAPI 3.0 document (eventbus/contract/asyncapi.py);
- ``schemas/<type>/v<version>.json``: a payload's JSON Schema, the ``dataschema`` a CloudEvent names;
- the mount itself: the catalogue page.
"""

from django.urls import path

from eventbus import views

app_name = "eventbus"

urlpatterns = [
    path("", views.catalogue_page, name="catalogue"),
    path("asyncapi.json", views.asyncapi_json, name="asyncapi"),
    path("schemas/<str:name>/v<int:version>.json", views.payload_schema_json, name="schema"),
]
