"""Root URLs."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import TemplateView

from ops.metrics import metrics_view
from ops.views import health
from telemetry.api import api as telemetry_api

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("signup/", include("signups.urls")),
    path("analytics/", include("analytics.urls")),
    path("telemetry/", include("telemetry.urls")),
    # Devices' readings (django-ninja), with its OpenAPI description at /api/v1/openapi.json.
    path("api/v1/", telemetry_api.urls),
    path("ops/", include("ops.urls")),
    # The event catalogue: the AsyncAPI document, each payload's JSON Schema, and a page for people (public).
    path("events/", include("eventbus.urls")),
    # Django's own sign-in and sign-out (LOGIN_URL): the site's way in, the ops pages' too.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="home"), name="logout"),
    path("admin/", admin.site.urls),
    # Probes and Prometheus, at the root where load balancers and scrapers look for them.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]

if settings.DEBUG:
    # The dev inbox reads the local SMTP sink's files; it does not exist in production.
    urlpatterns.append(path("dev/inbox/", include("devinbox.urls")))
