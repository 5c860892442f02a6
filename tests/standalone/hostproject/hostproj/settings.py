"""The second project's settings: its own choices, then the bus's Celery settings; every EVENTBUS_* default."""

import os

from eventbus.celery_settings import celery_settings

SECRET_KEY = "a-second-project-for-a-test-only-0123456789-abcdefghijklmnop"
DEBUG = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_celery_results", "eventbus", "greetings"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["HOSTPROJ_DATABASE"]}}

REDIS_URL = os.environ["HOSTPROJ_REDIS_URL"]
REDIS_KEY_PREFIX = os.environ["HOSTPROJ_KEY_PREFIX"]
CELERY_BROKER_URL = REDIS_URL
EVENTBUS_QUEUES = ("greetings", "eventbus", "dead_letter")
globals().update(celery_settings(globals()))
