"""Django project package; exports the Celery app so that `celery -A project` finds it."""

from project.celery import app as celery_app

__all__ = ("celery_app",)
