"""A minimal Django project that adds the event bus (tests/standalone/test_second_project.py)."""

from hostproj.celery import app as celery_app

__all__ = ("celery_app",)
