"""Request limits that must hold before any view runs: the body size of each request and failed-login throttling.

**Bodies.** Flask-WTF's CSRF check parses a page's form before the login guard runs, so an anonymous POST is read
and parsed in full unless its size is capped first: :func:`body_limit` (a ``before_request`` registered before
CSRF protection) gives every request ``MAX_BODY_KB``, except the uploads (datasets, typed texts to classify or
predict: ``MAX_UPLOAD_MB``; model zips: ``MAX_MODEL_UPLOAD_MB``, see ``model_files.upload_limits``). On pages those
larger limits are granted to a logged-in user only. Werkzeug refuses a larger ``Content-Length`` before reading it
(413 ``payload_too_large``), and a chunked body is cut at the limit.

**Logins.** Failed logins are counted per client address and per username (Flask-Limiter, ``LOGIN_RATE_LIMIT``
each); past either, the login page answers 429 without checking the password (a check costs ~85 ms of scrypt).
Successful logins are not counted. The counts live in the platform's Redis, so every web process shares them, or
in memory in eager mode (tests, demos); if Redis goes away the limiter falls back to memory and logins keep working.
The address is the TCP peer's unless ``PROXY_HOPS`` trusts that many ``X-Forwarded-For`` hops (``create_app``).
"""
from __future__ import annotations

from flask import Flask, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits import parse_many

from core.config import Settings
from core.schema import USERNAME_MAX

from . import context
from .errors import error_response, wants_json

LOGIN_ENDPOINT = "pages.login"
# Uploads and typed texts (a dataset typed into a box): MAX_UPLOAD_MB, like a dataset file.
UPLOAD_ENDPOINTS = frozenset({"api.upload_dataset", "pages.datasets", "api.predict", "api.create_classify_job",
                              "pages.classify"})
IMPORT_ENDPOINTS = frozenset({"api.import_model", "pages.model_import"})  # model_files.upload_limits raises these
LIMITER_KEY_PREFIX = "bertqueue-login"  # the limiter's keys in the shared Redis
LIMITER_REDIS_TIMEOUT_S = 1.0  # a Redis that does not answer falls back to memory instead of holding the login


def _may_upload() -> bool:
    """The API's body is read by its view only, after the token was checked; a page's form is parsed by the CSRF
    check before the login guard, so a page gets the upload limits only for a logged-in user."""
    if request.blueprint == "api":
        return True
    from flask_login import current_user

    return current_user.is_authenticated


def body_limit() -> None:
    """``before_request``, registered before CSRF protection: the largest body this request may send."""
    settings = context.settings()
    endpoint = request.endpoint
    if endpoint in UPLOAD_ENDPOINTS and _may_upload():
        limit = settings.max_upload_bytes
    elif endpoint in IMPORT_ENDPOINTS and _may_upload():
        return  # model_files.upload_limits, registered after this, grants MAX_MODEL_UPLOAD_MB
    else:
        limit = settings.max_body_bytes
    request.max_content_length = limit
    request.max_form_memory_size = limit  # non-file form fields (the classify textarea) count against it too


def _login_username() -> str:
    """The per-account key: the username typed into the login form (bounded: it is part of a storage key)."""
    username = request.form.get("username", "") if request.method == "POST" else ""
    return f"user:{username[:USERNAME_MAX]}" if username else ""  # "" skips the limit: no account to protect


def _failed_login(response) -> bool:
    return response.status_code == 401  # the login page's answer to a wrong username or password


def _throttled(exc: RateLimitExceeded):
    """429 on the login page: the form again with a message (JSON elsewhere, through the usual error handler)."""
    if request.endpoint != LOGIN_ENDPOINT or wants_json():
        return error_response(429, "too_many_requests", f"too many requests: the limit is {exc.limit.limit}")
    from .forms import LoginForm

    error = "Too many failed logins for this account or address: wait a minute and try again."
    return render_template("login.html", form=LoginForm(), error=error), 429


def init_login_limits(app: Flask, settings: Settings) -> Limiter:
    """A limiter of this app's own (tests build many apps) throttling failed logins on the login page."""
    try:  # checked now: a limit the limiter cannot read would be skipped silently at every login
        parse_many(settings.login_rate_limit)
    except ValueError:
        raise ValueError(f"LOGIN_RATE_LIMIT={settings.login_rate_limit!r} is not a rate limit such as "
                         "'10 per minute'") from None
    storage = "memory://" if settings.celery_eager else settings.redis_url
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage,
        storage_options={"socket_timeout": LIMITER_REDIS_TIMEOUT_S,
                         "socket_connect_timeout": LIMITER_REDIS_TIMEOUT_S} if storage != "memory://" else {},
        in_memory_fallback_enabled=True,  # Redis down: count in this process rather than refuse every login
        swallow_errors=True,  # a storage failure never turns a login into a 500
        key_prefix=LIMITER_KEY_PREFIX,
        headers_enabled=False,
    )
    view = app.view_functions[LOGIN_ENDPOINT]
    for key in (get_remote_address, _login_username):
        view = limiter.limit(settings.login_rate_limit, key_func=key, methods=["POST"],
                             deduct_when=_failed_login)(view)
    app.view_functions[LOGIN_ENDPOINT] = view
    app.register_error_handler(RateLimitExceeded, _throttled)
    return limiter
