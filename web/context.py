"""Per-app state (settings, Celery client, metrics) kept in ``app.extensions`` and helpers to reach it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from celery import Celery
from flask import current_app

from core.config import Settings

if TYPE_CHECKING:
    from .completion import CompletionListener
    from .metrics import Metrics

EXTENSION_KEY = "bertqueue"


@dataclass
class WebState:
    settings: Settings
    celery: Celery
    metrics: "Metrics"
    completion: "CompletionListener | None" = None  # None in eager mode: jobs finish inside the request


def state() -> WebState:
    return current_app.extensions[EXTENSION_KEY]


def settings() -> Settings:
    return state().settings


def celery() -> Celery:
    return state().celery


def completion() -> "CompletionListener | None":
    return state().completion
