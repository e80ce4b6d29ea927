"""Users (admins only) and the caller's own API tokens."""
from __future__ import annotations

from flask import url_for

from core.specs import TokenCreate, UserCreate

from .. import account_services as accounts, services
from ..auth import current
from . import bp
from .request_args import int_arg, json_object


@bp.post("/api/v1/users")
def create_user():
    """Create a user (admin): 201 with the user and their first API token, shown only in this answer."""
    spec = services.validate(UserCreate, json_object())
    user = accounts.create_user(current(), spec.username, spec.password, spec.is_admin)
    return user, 201


@bp.get("/api/v1/users")
def list_users():
    limit = int_arg("limit", 100, minimum=1, maximum=1000)
    offset = int_arg("offset", 0)
    items, total = accounts.list_users(current(), limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@bp.delete("/api/v1/users/<int:user_id>")
def disable_user(user_id: int):
    """Disable a user (admin): their tokens and logins stop working at once."""
    return accounts.disable_user(current(), user_id)


@bp.post("/api/v1/tokens")
def create_token():
    """A new named token for the caller: 201 with the token, shown only in this answer."""
    spec = services.validate(TokenCreate, json_object())
    token = accounts.create_token(current(), spec.name)
    return token, 201, {"Location": url_for("api.list_tokens")}


@bp.get("/api/v1/tokens")
def list_tokens():
    items, total = accounts.list_tokens(current())
    return {"items": items, "total": total}


@bp.delete("/api/v1/tokens/<int:token_id>")
def revoke_token(token_id: int):
    return accounts.revoke_token(current(), token_id)
