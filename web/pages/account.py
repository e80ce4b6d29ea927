"""Logging in and out, and the account page: the user's API tokens (create, shown once; revoke) and web logins
(listed; log out everywhere)."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, flash, redirect, render_template, request, url_for

from core import accounts
from core.db import db
from core.specs import TokenCreate

from .. import account_services, services
from ..auth import current, current_login_id, end_session, login_lifetime, start_session
from ..errors import ApiError
from ..forms import LoginForm, LogoutForm, RevokeTokenForm, TokenForm
from . import bp


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never an open redirect)."""
    # browsers read "/\\host" as "//host": backslashes are refused too
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target \
            and not urlsplit(target).netloc:
        return target
    return url_for(".index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        username, password = form.username.data, form.password.data
        with db.session() as session:  # a NUL can be no one's name (and PostgreSQL cannot compare one)
            principal = None if "\x00" in username + password else accounts.check_login(session, username, password)
        if principal is not None:
            start_session(principal)
            return redirect(_safe_next(request.args.get("next")))
        error = "Unknown username or wrong password."
    status = 401 if error else (400 if request.method == "POST" else 200)
    return render_template("login.html", form=form, error=error), status


@bp.post("/logout")
def logout():
    if not LogoutForm().validate_on_submit():
        abort(400, "the form expired: reload the page and try again")
    end_session()  # this login only: a copy of its cookie dies too, the user's other devices stay logged in
    flash("Logged out on this device (log out everywhere from the account page).", "ok")
    return redirect(url_for(".login"))


@bp.post("/account/logout-all")
def logout_everywhere():
    """End every web login of this user, on every device, this one included (API tokens stay)."""
    if not LogoutForm().validate_on_submit():
        abort(400, "the form expired: reload the page and try again")
    account_services.end_sessions(current())
    end_session()
    flash("Logged out everywhere.", "ok")
    return redirect(url_for(".login"))


@bp.route("/account", methods=["GET", "POST"])
def account():
    """The user's tokens (a new token is shown on this page once, right after it is created) and live logins."""
    form = TokenForm()
    new_token = None
    if form.validate_on_submit():
        try:
            spec = services.validate(TokenCreate, {"name": form.name.data.strip()})  # NUL, length: as the API
            new_token = account_services.create_token(current(), spec.name)
        except ApiError as exc:
            form.name.errors = [*form.name.errors, exc.message]
        else:
            form = TokenForm(formdata=None)
    tokens, _ = account_services.list_tokens(current())
    logins = account_services.list_logins(current(), login_lifetime(), current_login_id())
    status = 400 if request.method == "POST" and new_token is None else 200
    return render_template(
        "account.html", form=form, tokens=tokens, new_token=new_token, revoke_form=RevokeTokenForm(),
        storage=account_services.account(current()), logins=logins, logout_all_form=LogoutForm(),
    ), status


@bp.post("/account/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int):
    if not RevokeTokenForm().validate_on_submit():
        abort(400, "the form expired: reload the page and try again")
    account_services.revoke_token(current(), token_id)
    flash("Token revoked.", "ok")
    return redirect(url_for(".account"))
