"""bertqueue web process: the JSON API and the HTML pages. It never imports torch, ``worker`` or ``models``.

Jobs are created in SQL (committed first) and then announced to the workers by task name, carrying the job id.
"""
from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from core import runtime
from core.config import Settings
from core.queue import make_celery

from . import guards
from .context import EXTENSION_KEY, WebState

csrf = CSRFProtect()


def create_app(config: dict | None = None) -> Flask:
    """Build the Flask app. ``config`` holds Flask config keys and optionally ``"SETTINGS"`` (a ``Settings``)."""
    config = dict(config or {})
    settings: Settings = config.pop("SETTINGS", None) or Settings.from_env()
    runtime.configure(settings)

    app = Flask(__name__)
    if settings.proxy_hops:  # the client's address (login throttling) and scheme as the proxies saw them
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        # Non-file form fields (the classify textarea) may be as large as an upload, not Flask's 500 kB default.
        MAX_FORM_MEMORY_SIZE=settings.max_upload_bytes,
        # a CSRF token lives as long as a login does (and dies with its session at login and logout)
        WTF_CSRF_TIME_LIMIT=int(settings.session_lifetime_hours * 3600),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_lifetime_hours),
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # the login cookie is not sent with cross-site POSTs
    )
    if settings.trusted_hosts:  # Werkzeug answers 400 for any other Host header
        app.config["TRUSTED_HOSTS"] = [h.strip() for h in settings.trusted_hosts.split(",") if h.strip()]
    app.config.update(config)
    app.json.sort_keys = False

    from .completion import CompletionListener
    from .metrics import Metrics, redis_client

    app.extensions[EXTENSION_KEY] = WebState(
        settings=settings,
        celery=make_celery(settings),
        metrics=Metrics(None if settings.celery_eager else redis_client(settings.redis_url)),
        completion=None if settings.celery_eager else CompletionListener(settings.redis_url),
    )

    from . import api, auth, cli, errors, limits, model_files, pages

    app.before_request(limits.body_limit)  # before CSRF's check, which parses the form
    app.before_request(model_files.upload_limits)
    csrf.init_app(app)
    csrf.exempt(api.bp)  # JSON API: Bearer tokens only, never cookies, so no CSRF token either
    auth.init_app(app)
    guards.register(app)  # bounded <int:> ids, no NUL in paths or queries: before the blueprints add rules
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    errors.register(app)
    limits.init_login_limits(app, settings)
    cli.register(app)
    app.extensions[EXTENSION_KEY].metrics.init_app(app)
    return app
