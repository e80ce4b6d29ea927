"""Process-wide runtime: the settings in force and the database they point at.

The web's app factory and the worker's process-init hook both call :func:`configure`; eager-mode tests run
both in one process and so share it.
"""
from __future__ import annotations

from .config import Settings
from .db import db

_settings: Settings | None = None


def configure(settings: Settings) -> Settings:
    """Make ``settings`` current for this process and point ``db`` at its database."""
    global _settings
    _settings = settings
    db.configure(settings.database_url)
    return settings


def settings() -> Settings:
    """The settings in force (configured from the environment on first use)."""
    if _settings is None:
        return configure(Settings.from_env())
    return _settings
