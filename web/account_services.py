"""What the API, the account page and the CLI do with users and tokens: core.accounts plus access rules.

Admins manage users; every user manages their own tokens. Each function commits its own session and returns
JSON-ready dicts; :class:`web.errors.ApiError` reports what cannot be done.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from core import accounts, quotas
from core.accounts import AccountError, Principal
from core.db import db
from core.schema import User

from . import context
from .errors import ApiError
from .serializers import login_to_dict, token_to_dict, user_to_dict


def _api_error(exc: AccountError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def require_admin(user: Principal) -> None:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "only an admin can manage users")


def create_user(admin: Principal, username: str, password: str | None, is_admin: bool) -> dict:
    """A new user and their first token (shown only in this answer)."""
    require_admin(admin)
    with db.session() as session:
        try:
            user, new = accounts.create_user(session, username, password=password, is_admin=is_admin)
        except AccountError as exc:
            raise _api_error(exc) from None
        return {**user_to_dict(user), "token": new.token}


def list_users(admin: Principal, *, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    require_admin(admin)
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(User))
        rows = session.scalars(select(User).order_by(User.id).limit(limit).offset(offset))
        return [user_to_dict(u) for u in rows], total


def disable_user(admin: Principal, user_id: int) -> dict:
    """Disable a user (their tokens and logins stop working; their data stays). An admin cannot disable themself."""
    require_admin(admin)
    if user_id == admin.id:
        raise ApiError(409, "cannot_disable_self", "you cannot disable your own account")
    with db.session() as session:
        try:
            return user_to_dict(accounts.disable_user(session, user_id))
        except AccountError as exc:
            raise _api_error(exc) from None


def account(user: Principal) -> dict:
    """The caller's account with their storage usage against their quotas (``core.quotas``)."""
    with db.session() as session:
        row = session.get(User, user.id)
        return {**user_to_dict(row), **quotas.report(session, context.settings(), user)}


def end_sessions(user: Principal) -> dict:
    """Log the caller out everywhere: every web login of theirs ends (their API tokens stay)."""
    with db.session() as session:
        return user_to_dict(accounts.end_sessions(session, user.id))


def list_logins(user: Principal, lifetime: timedelta, this_login_id: int | None) -> list[dict]:
    """The caller's live web logins, newest first; ``this_device`` marks the one making this request."""
    with db.session() as session:
        return [{**login_to_dict(row), "this_device": row.id == this_login_id}
                for row in accounts.list_logins(session, user.id, lifetime=lifetime)]


def create_token(user: Principal, name: str) -> dict:
    with db.session() as session:
        new = accounts.create_token(session, user.id, name)
        return {**token_to_dict(new.row), "token": new.token}


def list_tokens(user: Principal) -> tuple[list[dict], int]:
    with db.session() as session:
        rows = [token_to_dict(t) for t in accounts.list_tokens(session, user.id)]
    return rows, len(rows)


def revoke_token(user: Principal, token_id: int) -> dict:
    """Revoke one of the caller's own tokens (someone else's id answers 404, like a missing one)."""
    with db.session() as session:
        try:
            return token_to_dict(accounts.revoke_token(session, user.id, token_id))
        except AccountError as exc:
            raise _api_error(exc) from None
