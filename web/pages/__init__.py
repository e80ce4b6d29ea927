"""HTML pages: dashboard, datasets, training and classification forms, jobs and models."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("pages", __name__)  # templates and static files are the app's: web/templates, web/static

from . import account, classify, datasets, filters, home, jobs, models, train  # noqa: E402,F401  (routes register on import)
