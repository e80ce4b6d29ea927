"""Users (admins only) and the caller's own API tokens."""
from __future__ import annotations

from flask import url_for

from core.specs import TokenCreate, UserCreate

from .. import account_services as accounts, schemas
from ..auth import current
from ..queries import Page
from . import bp
from .apidoc import FORBIDDEN, Answer, documented


@bp.post("/api/v1/users")
@documented(
    "Create a user (admins only); the answer holds their first API token, shown only here",
    body=UserCreate,
    responses={
        201: Answer("created", schemas.NewUser),
        403: FORBIDDEN,
        409: "the username is taken (username_taken)",
    },
)
def create_user(body: UserCreate):
    """Create a user (admin): 201 with the user and their first API token, shown only in this answer."""
    return accounts.create_user(current(), body.username, body.password, body.is_admin), 201


@bp.get("/api/v1/users")
@documented(
    "List users (admins only)", query=Page, responses={200: Answer("users", schemas.UserList), 403: FORBIDDEN}
)
def list_users(query: Page):
    items, total = accounts.list_users(current(), limit=query.limit, offset=query.offset)
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


@bp.delete("/api/v1/users/<int:user_id>")
@documented(
    "Disable a user (admins only): their tokens and logins stop working, their data stays",
    responses={
        200: Answer("the disabled user", schemas.User),
        403: FORBIDDEN,
        409: "an admin cannot disable themself (cannot_disable_self)",
    },
)
def disable_user(user_id: int):
    """Disable a user (admin): their tokens and logins stop working at once."""
    return accounts.disable_user(current(), user_id)


@bp.get("/api/v1/account")
@documented(
    "The caller's account: who they are and their storage usage against their quotas",
    responses={200: Answer("the account", schemas.Account)},
)
def get_account():
    return accounts.account(current())


@bp.delete("/api/v1/sessions")
@documented(
    "Log out everywhere: every web (cookie) session of the caller ends; API tokens stay (revoke them one by one)",
    responses={200: Answer("the caller", schemas.User)},
)
def end_sessions():
    return accounts.end_sessions(current())


@bp.post("/api/v1/tokens")
@documented(
    "Create an API token for the caller; the token is shown only in this answer",
    body=TokenCreate,
    responses={201: Answer("created", schemas.NewToken, headers={"Location": "the caller's tokens"})},
)
def create_token(body: TokenCreate):
    """A new named token for the caller: 201 with the token, shown only in this answer."""
    token = accounts.create_token(current(), body.name)
    return token, 201, {"Location": url_for("api.list_tokens")}


@bp.get("/api/v1/tokens")
@documented(
    "The caller's API tokens (metadata only: a token itself is never shown again)",
    responses={200: Answer("tokens", schemas.TokenList)},
)
def list_tokens():
    items, total = accounts.list_tokens(current())
    return {"items": items, "total": total}


@bp.delete("/api/v1/tokens/<int:token_id>")
@documented(
    "Revoke one of the caller's tokens (another user's token id is a 404)",
    responses={200: Answer("the revoked token", schemas.Token)},
)
def revoke_token(token_id: int):
    return accounts.revoke_token(current(), token_id)
