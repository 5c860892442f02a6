"""WSGI entry point for the web process."""

import logging
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
application = get_wsgi_application()

# Said once as the web process starts (gunicorn and runserver both load this module), so that
# nobody has to guess who may scrape /metrics.
from ops.metrics import access_mode  # noqa: E402 -- needs the apps that get_wsgi_application() set up

logging.getLogger("ops.metrics").info("%s", access_mode())
