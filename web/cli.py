"""Account administration from the shell: ``flask --app web users ...`` / ``tokens ...`` / ``bootstrap``.

The same rules as the REST API (core.accounts), for an operator with access to the database rather than a token.
"""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from pydantic import ValidationError

from core import accounts
from core.accounts import AccountError
from core.db import db
from core.specs import TokenCreate, UserCreate

from . import context
from .serializers import token_to_dict, user_to_dict

users_cli = AppGroup("users", help="Create, list and disable users.")
tokens_cli = AppGroup("tokens", help="Create, list and revoke API tokens.")

def _user_key(value: str) -> int | str:
    """An id (ASCII digits, at most 18 of them: below 2^63) or a username (never all digits: see UserCreate)."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else value


def _fail(exc: AccountError | ValidationError) -> None:
    if isinstance(exc, ValidationError):
        raise click.ClickException("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))
    raise click.ClickException(exc.message)


@users_cli.command("create")
@click.argument("username")
@click.option("--password", help="web login password (prompted when --prompt-password; none: API tokens only)")
@click.option("--prompt-password", is_flag=True, help="ask for the password instead of passing it on the command line")
@click.option("--admin", is_flag=True, help="make the user an admin")
def create_user(username: str, password: str | None, prompt_password: bool, admin: bool) -> None:
    """Create USERNAME and print their first API token (shown only now)."""
    if prompt_password:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        spec = UserCreate.model_validate({"username": username, "password": password, "is_admin": admin})
        with db.session() as session:
            user, new = accounts.create_user(session, spec.username, password=spec.password, is_admin=spec.is_admin)
            click.echo(f"created user {user.username} (id {user.id}{', admin' if user.is_admin else ''})")
            click.echo(f"API token (shown only now): {new.token}")
    except (AccountError, ValidationError) as exc:
        _fail(exc)


@users_cli.command("list")
def list_users() -> None:
    """List every user."""
    from sqlalchemy import select

    from core.schema import User

    with db.session() as session:
        for user in session.scalars(select(User).order_by(User.id)):
            row = user_to_dict(user)
            state = "disabled" if row["disabled_at"] else "active"
            click.echo(f"{row['id']}\t{row['username']}\t{'admin' if row['is_admin'] else 'user'}\t{state}")


@users_cli.command("disable")
@click.argument("user")
def disable_user(user: str) -> None:
    """Disable USER (id or username): their logins and tokens stop working; their data stays."""
    try:
        with db.session() as session:
            disabled = accounts.disable_user(session, _user_key(user))
            click.echo(f"disabled user {disabled.username} (id {disabled.id})")
    except AccountError as exc:
        _fail(exc)


@users_cli.command("set-password")
@click.argument("user")
@click.password_option()
def set_password(user: str, password: str) -> None:
    """Set the web login password of USER (id or username)."""
    try:
        UserCreate.model_validate({"username": "x", "password": password})
        with db.session() as session:
            changed = accounts.set_password(session, _user_key(user), password)
            click.echo(f"password of {changed.username} changed")
    except (AccountError, ValidationError) as exc:
        _fail(exc)


@tokens_cli.command("create")
@click.option("--user", "user", required=True, help="id or username of the token's owner")
@click.argument("name")
def create_token(user: str, name: str) -> None:
    """Create an API token NAME for a user and print it (shown only now)."""
    try:
        spec = TokenCreate.model_validate({"name": name})
        with db.session() as session:
            owner = accounts.find_user(session, _user_key(user))
            new = accounts.create_token(session, owner.id, spec.name)
            click.echo(f"token {new.row.id} ({new.row.name}) for {owner.username}: {new.token}")
    except (AccountError, ValidationError) as exc:
        _fail(exc)


@tokens_cli.command("list")
@click.option("--user", "user", required=True, help="id or username")
def list_tokens(user: str) -> None:
    """List a user's tokens (never their values: only hashes are stored)."""
    try:
        with db.session() as session:
            owner = accounts.find_user(session, _user_key(user))
            for token in accounts.list_tokens(session, owner.id):
                row = token_to_dict(token)
                state = "revoked" if row["revoked_at"] else "active"
                click.echo(f"{row['id']}\t{row['name']}\t{state}\tlast used {row['last_used_at'] or 'never'}")
    except AccountError as exc:
        _fail(exc)


@tokens_cli.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    """Revoke token TOKEN_ID (of any user)."""
    try:
        with db.session() as session:
            token = accounts.revoke_token(session, None, token_id)
            click.echo(f"revoked token {token.id} ({token.name})")
    except AccountError as exc:
        _fail(exc)


@click.command("bootstrap")
@with_appcontext
@click.option("--credentials-file", type=click.Path(dir_okay=False), default=str(accounts.DEFAULT_CREDENTIALS_FILE), show_default=True)
def bootstrap(credentials_file: str) -> None:
    """Create the first admin if the database has no user (token: BERTQUEUE_ADMIN_TOKEN, else random)."""
    from pathlib import Path

    with db.session() as session:
        created = accounts.bootstrap_admin(session, Path(credentials_file), admin_token=context.settings().admin_token)
    if created is None:
        click.echo("users exist already: nothing to do")
        return
    click.echo(f"created admin {created.username!r}; credentials written to {credentials_file} (mode 0600)")


@click.command("recount-predictions")
@with_appcontext
def recount_predictions() -> None:
    """Recount every user's stored predictions (the prediction quota's counter) from their jobs: after an upgrade
    that ran old code alongside migration 0015, say. Best with the workers stopped."""
    from core.quotas import recount_predictions as recount

    with db.session() as session:
        holders = recount(session)
        session.commit()
    click.echo(f"recounted: {holders} user(s) hold stored predictions")


def register(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(tokens_cli)
    app.cli.add_command(bootstrap)
    app.cli.add_command(recount_predictions)
