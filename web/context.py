"""Per-app state (settings, Celery client, metrics) kept in ``app.extensions`` and helpers to reach it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from celery import Celery
from flask import current_app

from core.config import Settings

if TYPE_CHECKING:
    from .metrics import Metrics

EXTENSION_KEY = "bertqueue"


@dataclass
class WebState:
    settings: Settings
    celery: Celery
    metrics: "Metrics"


def state() -> WebState:
    return current_app.extensions[EXTENSION_KEY]


def settings() -> Settings:
    return state().settings


def celery() -> Celery:
    return state().celery
