"""Celery worker side of bertqueue. Keep this import-light: no torch here."""
