"""The second project's Celery app, the standard way: the bus needs nothing more."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hostproj.settings")

app = Celery("hostproj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
