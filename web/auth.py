"""Who is calling: API tokens for ``/api/v1``, a login session (Flask-Login) for the pages.

- Every ``/api/v1`` route needs ``Authorization: Bearer <token>``; a cookie never authenticates the API, so a
  cross-site page cannot use a logged-in browser against it. Open: ``/healthz``, ``/readyz``, the OpenAPI
  document; ``/metrics`` is for admins unless ``METRICS_PUBLIC`` is set.
- Pages need a logged-in user (session cookie; the login form is CSRF-protected). A Bearer token is accepted on
  pages as well (scripts, tests); no browser sends one by itself.

Both set ``g.principal``; views hand :func:`current` to the services, which scope every query by it.

A login session starts empty (:func:`start_session` clears whatever the browser brought, so a session or CSRF token
planted before the login is worthless after it) and carries the id of its login, a row in SQL
(``core.accounts.start_login``): each request checks that row is live. A logout revokes this login only (a copy of
the cookie dies with it, the user's other devices stay logged in); "log out everywhere", a password change and a
disable revoke all of the user's logins. A login also ends ``SESSION_LIFETIME_HOURS`` after it began, however
active it was.
"""
from __future__ import annotations

from datetime import timedelta

from flask import Flask, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from core import accounts
from core.accounts import Principal
from core.config import MAX_TOKEN_CHARS
from core.db import db

from . import context
from .errors import ApiError

API_PREFIX = "/api/"  # the JSON API's routes (web.api): token-authenticated only

# API endpoints that answer without a token (probes and the API description)
OPEN_ENDPOINTS = frozenset({"api.healthz", "api.readyz", "api.openapi"})
METRICS_ENDPOINT = "api.metrics"
# pages reachable without logging in
OPEN_PAGES = frozenset({"pages.login"})

login_manager = LoginManager()
login_manager.login_view = "pages.login"
login_manager.login_message = None  # the login page says what to do


class SessionUser(UserMixin):
    """Flask-Login's view of a :class:`Principal`. A cookie login also has its login's secret id (what
    :meth:`get_id` gives the session cookie) and row id; a Bearer token on a page has neither."""

    def __init__(self, principal: Principal, login_secret: str | None = None, login_id: int | None = None) -> None:
        self.principal = principal
        self.id = principal.id
        self.login_secret, self.login_id = login_secret, login_id

    def get_id(self) -> str | None:
        return self.login_secret


def login_lifetime() -> timedelta:
    """How long a web login lives (SESSION_LIFETIME_HOURS), counted from the login."""
    return timedelta(hours=context.settings().session_lifetime_hours)


def start_session(principal: Principal) -> None:
    """Log ``principal`` in on a fresh session and a new login row: nothing of the anonymous session (its CSRF
    token) survives."""
    session.clear()
    with db.session() as db_session:
        secret = accounts.start_login(db_session, principal.id, lifetime=login_lifetime(),
                                      user_agent=request.user_agent.string, address=request.remote_addr)
    login_user(SessionUser(principal, secret))
    session.permanent = True  # the cookie lives PERMANENT_SESSION_LIFETIME, not "until the browser closes"


def current_login_id() -> int | None:
    """The row id of this request's login (None for a Bearer token on a page)."""
    return getattr(current_user, "login_id", None)


def end_session() -> None:
    """Log out: revoke this login (every copy of its cookie dies with it; the user's other logins stay) and
    forget everything the session held (its CSRF token included)."""
    secret = getattr(current_user, "login_secret", None)
    if secret:
        with db.session() as db_session:
            accounts.end_login(db_session, secret)
    logout_user()
    session.clear()


def current() -> Principal:
    """The authenticated caller of this request (set before any view runs)."""
    principal = g.get("principal")
    if principal is None:  # a view reached without the guards: never serve it anonymously
        raise ApiError(401, "unauthorized", "authentication required")
    return principal


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _principal_from_token(token: str) -> Principal | None:
    if "\x00" in token or len(token) > MAX_TOKEN_CHARS:
        return None
    with db.session() as session:
        return accounts.authenticate_token(session, token)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def _guard_api():
    endpoint = request.endpoint or ""
    if endpoint in OPEN_ENDPOINTS:
        return None
    if endpoint == METRICS_ENDPOINT and context.settings().metrics_public:
        return None
    token = bearer_token()
    if token is None:
        raise _unauthorized("send an API token: Authorization: Bearer <token>")
    principal = _principal_from_token(token)
    if principal is None:
        raise _unauthorized("the API token is invalid, revoked, or its user is disabled")
    if endpoint == METRICS_ENDPOINT and not principal.is_admin:
        raise ApiError(403, "forbidden", "metrics are for admins (or set METRICS_PUBLIC=true)")
    g.principal = principal
    return None


def _guard_pages():
    from flask_login import current_user

    if request.endpoint in OPEN_PAGES:
        return None
    if current_user.is_authenticated:
        g.principal = current_user.principal
        return None
    return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))


def _guard():
    if request.blueprint == "api":
        return _guard_api()
    if request.blueprint == "pages":
        return _guard_pages()
    return None  # static files, or no route matched (the 404/405 handlers answer)


def _challenge(response):
    if response.status_code == 401 and request.blueprint == "api":  # RFC 6750: say which scheme the API wants
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="bertqueue"')
    return response


class _SessionInterface(SecureCookieSessionInterface):
    """The signed-cookie session of the pages; an API call (token-authenticated, never by cookie) gets a null
    session instead, so it does not pay for verifying a cookie it never reads (it is opened before routing, hence
    the path)."""

    def open_session(self, app: Flask, request):
        if request.path.startswith(API_PREFIX):
            return self.make_null_session(app)
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    """Install the login manager, the session interface and the guards that run before every view."""
    login_manager.init_app(app)
    app.session_interface = _SessionInterface()
    app.before_request(_guard)
    app.after_request(_challenge)


@login_manager.user_loader
def _load_session_user(login_secret: str) -> SessionUser | None:
    """The session's user while its login is live: not revoked, younger than SESSION_LIFETIME_HOURS, its user
    active (one lookup). A cookie from before login rows ("id:epoch") matches none: log in again."""
    if not isinstance(login_secret, str) or "\x00" in login_secret or len(login_secret) > MAX_TOKEN_CHARS:
        return None
    with db.session() as db_session:
        live = accounts.authenticate_login(db_session, login_secret, lifetime=login_lifetime())
    if live is None:
        return None
    login_id, principal = live
    return SessionUser(principal, login_secret, login_id)


@login_manager.request_loader
def _load_bearer_user(_request) -> SessionUser | None:
    token = bearer_token()
    principal = _principal_from_token(token) if token else None
    return SessionUser(principal) if principal is not None else None
