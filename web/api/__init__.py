"""The JSON API (``/api/v1/...``) plus the health, readiness, metrics and OpenAPI endpoints."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__)

from . import datasets, docs, health, jobs, models, predict  # noqa: E402,F401  (routes register on import)
