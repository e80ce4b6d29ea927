"""Users, API tokens and the first admin. The web (API, pages, CLI) and ``make run`` all go through here.

Passwords are hashed with Werkzeug's ``generate_password_hash`` (scrypt, salted). API tokens are 256-bit random
strings: only their SHA-256 is stored (a token is as strong as a key, so a slow hash adds nothing), so a copy of
the database does not let anyone in, and a token is shown once, when it is created.

Web logins are rows too (:class:`LoginSession`): the session cookie carries a random login id, stored hashed the
same way. A login lives until it is logged out, its user logs out everywhere, changes password or is disabled
(every login of theirs is revoked), or its lifetime (SESSION_LIFETIME_HOURS, passed in by the web) runs out.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from . import jobs
from .config import VAR_DIR
from .schema import ADDRESS_MAX, USER_AGENT_MAX, ApiToken, LoginSession, User, utcnow

TOKEN_PREFIX = "bq_"
ADMIN_USERNAME = "admin"
DEFAULT_CREDENTIALS_FILE = VAR_DIR / "admin_credentials"  # where the first admin's credentials are written
# last_used_at (last_seen_at) is written at most this often per token (login): a call costs a read, not a write
LAST_USED_RESOLUTION = timedelta(seconds=60)
# An unusable hash for unknown users, so a login for a missing user costs as much as one for a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


class AccountError(Exception):
    """A request about accounts that cannot be done (a taken username, an unknown user or token)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Principal:
    """Who is calling: enough to scope queries, detached from any session."""

    id: int
    username: str
    is_admin: bool

    @classmethod
    def of(cls, user: User) -> "Principal":
        return cls(id=user.id, username=user.username, is_admin=bool(user.is_admin))


@dataclass(frozen=True)
class NewToken:
    """A token just created: ``token`` is the only time the secret is available."""

    row: ApiToken
    token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# ---------------------------------------------------------------- users


def create_user(
    session: Session, username: str, *, password: str | None = None, is_admin: bool = False,
    token: str | None = None, token_name: str = "default",
) -> tuple[User, NewToken]:
    """A new user and their first API token (``token`` if given, else a random one); flushes, does not commit.

    A user created without a password can use the API only (no web login) until one is set.
    """
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountError(409, "username_taken", f"the username {username!r} is already taken")
    user = User(
        username=username,
        password_hash=generate_password_hash(password) if password else None,
        is_admin=is_admin,
        created_at=utcnow(),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request took the name between the check and the insert
        session.rollback()
        raise AccountError(409, "username_taken", f"the username {username!r} is already taken") from None
    return user, create_token(session, user.id, token_name, token=token)


def find_user(session: Session, key: int | str) -> User:
    """A user by id or username; :class:`AccountError` 404 when there is none."""
    user = session.get(User, key) if isinstance(key, int) else session.scalar(select(User).where(User.username == key))
    if user is None:
        raise AccountError(404, "not_found", f"user {key} does not exist")
    return user


def disable_user(session: Session, key: int | str) -> User:
    """Disable a user: their logins, web sessions and tokens stop working at once, and their queued and running
    jobs are cancelled in the same transaction (the caller commits); what they own stays. Idempotent."""
    user = find_user(session, key)
    if user.disabled_at is None:
        user.disabled_at = utcnow()
        session.flush()
    revoke_logins(session, user.id)  # the login check refuses a disabled user anyway: no row stays live
    jobs.cancel_owned(session, user.id)  # also on a repeat: a job created while the disable raced it
    return user


def set_password(session: Session, key: int | str, password: str) -> User:
    """Change a user's web password; their web sessions end everywhere (API tokens are separate credentials and
    stay: revoke them on the account page or with the API)."""
    user = find_user(session, key)
    user.password_hash = generate_password_hash(password)
    session.flush()
    revoke_logins(session, user.id)
    return user


def end_sessions(session: Session, user_id: int) -> User:
    """"Log out everywhere": every web login of ``user_id`` ends (API tokens stay)."""
    user = find_user(session, user_id)
    revoke_logins(session, user.id)
    return user


def check_login(session: Session, username: str, password: str) -> Principal | None:
    """The active user with this username and password, or None (for any reason: no hint which part was wrong)."""
    user = session.scalar(select(User).where(User.username == username))
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    if not check_password_hash(stored, password) or user is None or not user.active or not user.password_hash:
        return None
    return Principal.of(user)


# ---------------------------------------------------------------- web logins


def _clean(value: str | None, limit: int) -> str | None:
    """A header value fit for a column: no NUL (PostgreSQL refuses one in text), at most ``limit`` characters."""
    value = (value or "").replace("\x00", "")[:limit]
    return value or None


def start_login(
    session: Session, user_id: int, *, lifetime: timedelta, user_agent: str | None = None, address: str | None = None
) -> str:
    """A new web login of ``user_id``; flushes. Returns its id, the session cookie's secret: only its SHA-256 is
    stored. The user's expired and revoked logins are deleted first, so the table holds about one row per device."""
    now = utcnow()
    session.execute(
        delete(LoginSession)
        .where(LoginSession.user_id == user_id,
               or_(LoginSession.revoked_at.is_not(None), LoginSession.created_at <= now - lifetime))
        .execution_options(synchronize_session=False)
    )
    secret = secrets.token_urlsafe(32)
    session.add(LoginSession(
        user_id=user_id, token_hash=hash_token(secret), created_at=now, last_seen_at=now,
        user_agent=_clean(user_agent, USER_AGENT_MAX), address=_clean(address, ADDRESS_MAX),
    ))
    session.flush()
    return secret


def _live(now, lifetime: timedelta):
    """The SQL condition of a login that still works: not revoked, younger than ``lifetime``."""
    return LoginSession.revoked_at.is_(None), LoginSession.created_at > now - lifetime


def authenticate_login(session: Session, secret: str, *, lifetime: timedelta) -> tuple[int, Principal] | None:
    """The live login with this id and its active user as (login row id, principal), or None (unknown, revoked,
    expired, or the user is disabled): one lookup by the unique hash. Records when it was last seen; commits."""
    now = utcnow()
    row = session.execute(
        select(LoginSession.id, LoginSession.last_seen_at, User)
        .join(User, User.id == LoginSession.user_id)
        .where(LoginSession.token_hash == hash_token(secret), *_live(now, lifetime), User.disabled_at.is_(None))
    ).first()
    if row is None:
        return None
    principal = Principal.of(row.User)
    _touch(session, LoginSession.last_seen_at, row.id, row.last_seen_at, now)
    return row.id, principal


def end_login(session: Session, secret: str) -> None:
    """Revoke the login with this id (a logout): copies of its cookie stop working, the user's other logins stay."""
    session.execute(
        update(LoginSession)
        .where(LoginSession.token_hash == hash_token(secret), LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_logins(session: Session, user_id: int) -> int:
    """Revoke every live login of ``user_id`` (log out everywhere); how many there were."""
    result = session.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def list_logins(session: Session, user_id: int, *, lifetime: timedelta) -> list[LoginSession]:
    """The live logins of ``user_id``, the newest first."""
    return list(session.scalars(
        select(LoginSession).where(LoginSession.user_id == user_id, *_live(utcnow(), lifetime))
        .order_by(LoginSession.created_at.desc(), LoginSession.id.desc())
    ))


def _touch(session: Session, column, row_id: int, last: datetime | None, now: datetime) -> None:
    """Set ``column`` (a last-used time) of row ``row_id`` to ``now`` when ``last`` is older than
    LAST_USED_RESOLUTION, and commit; a locked database skips it (the time is written next minute)."""
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=now.tzinfo)
    if last is not None and now - last < LAST_USED_RESOLUTION:
        return
    table = column.class_
    try:
        session.execute(update(table).where(table.id == row_id).values({column.key: now}))
        session.commit()
    except OperationalError:  # a locked database must not fail the request
        session.rollback()


# ---------------------------------------------------------------- tokens


def create_token(session: Session, user_id: int, name: str, *, token: str | None = None) -> NewToken:
    """A new named token for ``user_id``; flushes. ``token`` fixes its value (the bootstrap admin's)."""
    secret = token or generate_token()
    row = ApiToken(user_id=user_id, name=name, token_hash=hash_token(secret), created_at=utcnow())
    session.add(row)
    session.flush()
    return NewToken(row=row, token=secret)


def list_tokens(session: Session, user_id: int) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)))


def revoke_token(session: Session, user_id: int | None, token_id: int) -> ApiToken:
    """Revoke a token of ``user_id`` (None: any user's, for admins and the CLI); 404 for anyone else's. Idempotent."""
    row = session.get(ApiToken, token_id)
    if row is None or (user_id is not None and row.user_id != user_id):
        raise AccountError(404, "not_found", f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


# Every API call runs this: built once (no per-call statement construction or cache-key work), plain columns (no
# User entity loaded into the session)
_TOKEN_LOOKUP = (
    select(ApiToken.id, ApiToken.last_used_at, User.id.label("user_id"), User.username, User.is_admin)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None), User.disabled_at.is_(None))
)


def authenticate_token(session: Session, token: str) -> Principal | None:
    """The active user owning this unrevoked token, or None. Records when the token was last used; commits."""
    row = session.execute(_TOKEN_LOOKUP, {"token_hash": hash_token(token)}).first()
    if row is None:
        return None
    principal = Principal(id=row.user_id, username=row.username, is_admin=bool(row.is_admin))
    _touch(session, ApiToken.last_used_at, row.id, row.last_used_at, utcnow())
    return principal


# ---------------------------------------------------------------- the first admin


@dataclass(frozen=True)
class AdminCredentials:
    username: str
    password: str | None  # None when the admin already existed
    token: str


def bootstrap_admin(session: Session, credentials_file: Path, *, admin_token: str = "") -> AdminCredentials | None:
    """Create the first admin when the database has no user at all, and write its credentials to
    ``credentials_file`` (mode 0600); commits. None when users exist already.

    The admin's token is ``admin_token`` when given (automation, docker-compose), else random; the password is
    always random (the web login). Two processes racing here create one admin: the username is unique.
    """
    if session.scalar(select(func.count()).select_from(User)) > 0:
        return None
    password = secrets.token_urlsafe(12)
    try:
        _, new = create_user(
            session, ADMIN_USERNAME, password=password, is_admin=True, token=admin_token or None, token_name="bootstrap"
        )
        session.commit()
    except AccountError:
        return None  # another process created it first
    created = AdminCredentials(ADMIN_USERNAME, password, new.token)
    _write_credentials(credentials_file, created, token_from_env=bool(admin_token))
    return created


def _write_credentials(path: Path, credentials: AdminCredentials, *, token_from_env: bool) -> None:
    """Write the generated admin credentials to ``path`` with mode 0600 (created that way: never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token_line = "(the value of BERTQUEUE_ADMIN_TOKEN)" if token_from_env else credentials.token
    text = (
        "# bertqueue admin account, created on first start. Keep this file private.\n"
        f"username={credentials.username}\npassword={credentials.password}\ntoken={token_line}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode on O_TRUNC: tighten it before the secret is written
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
