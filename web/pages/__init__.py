"""HTML pages: dashboard, datasets, training and classification forms, jobs and models."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("pages", __name__)  # templates and static files are the app's: web/templates, web/static

from . import (  # noqa: E402,F401  (routes register on import)
    account, classify, datasets, entities, filters, home, jobs, model_import, models, train,
)
