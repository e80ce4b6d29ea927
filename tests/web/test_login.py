"""Web login (session cookie, CSRF-protected forms), the account page's tokens, the CLI and the first admin."""
from __future__ import annotations

import re
import stat

import pytest
from sqlalchemy import func, select

from core import accounts
from core.db import db
from core.schema import ApiToken, Job, LoginSession, User
from tests.factories import api_client, make_user

from . import factories as f
from .helpers import assert_error


@pytest.fixture
def browser(settings):
    """A cookie-keeping client of an app with CSRF on, as a real browser would see it."""
    from web import create_app

    return create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": True}).test_client()


def csrf(client, path: str) -> str:
    match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def log_in(client, username: str, password: str, next_path: str = ""):
    token = csrf(client, "/login")
    return client.post(f"/login{next_path}", data={"csrf_token": token, "username": username, "password": password})


def test_pages_redirect_to_login_and_back(browser):
    make_user("carol", password="correct horse")
    response = browser.get("/jobs?status=queued")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/jobs?status%3Dqueued"
    login = log_in(browser, "carol", "correct horse", "?next=/jobs?status%3Dqueued")
    assert login.status_code == 302 and login.headers["Location"] == "/jobs?status=queued"
    page = browser.get("/jobs").get_data(as_text=True)
    assert 'id="account-link">carol</a>' in page


def test_wrong_password_unknown_user_and_disabled_user_cannot_log_in(browser):
    make_user("carol", password="correct horse")
    for username, password in (("carol", "wrong horse"), ("nobody", "correct horse")):
        response = log_in(browser, username, password)
        assert response.status_code == 401 and "Unknown username or wrong password." in response.get_data(as_text=True)
        assert browser.get("/").status_code == 302
    with db.session() as session:
        accounts.disable_user(session, "carol")
    assert log_in(browser, "carol", "correct horse").status_code == 401
    # a token-only user (no password) has no web login
    make_user("robot")
    assert log_in(browser, "robot", "").status_code == 400


def test_hostile_login_input_is_a_plain_failed_login(browser):
    make_user("carol", password="correct horse")
    for username, password in (("car\x00ol", "correct horse"), ("carol", "correct\x00horse"), ("x" * 65, "p")):
        response = log_in(browser, username, password)
        assert response.status_code in (400, 401), username
        assert browser.get("/").status_code == 302


def test_only_trusted_hosts_are_answered(settings):
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(trusted_hosts="bertqueue.example, localhost")})
    client = app.test_client()
    assert client.get("/healthz", headers={"Host": "bertqueue.example"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400


def test_login_without_csrf_token_is_rejected(browser):
    make_user("carol", password="correct horse")
    browser.get("/login")
    response = browser.post("/login", data={"username": "carol", "password": "correct horse"})
    assert response.status_code == 400
    assert browser.get("/").status_code == 302  # still logged out


def test_next_is_never_an_open_redirect(browser):
    make_user("carol", password="correct horse")
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil"):
        response = log_in(browser, "carol", "correct horse", f"?next={target}")
        assert response.headers["Location"] == "/", target
        browser.post("/logout", data={"csrf_token": csrf(browser, "/")})


def test_logout_needs_csrf_and_ends_the_session(browser):
    make_user("carol", password="correct horse")
    log_in(browser, "carol", "correct horse")
    assert browser.post("/logout").status_code == 400
    assert browser.get("/").status_code == 200
    response = browser.post("/logout", data={"csrf_token": csrf(browser, "/")})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert browser.get("/").status_code == 302


def test_a_login_cookie_never_authenticates_the_api(browser):
    make_user("carol", password="correct horse")
    log_in(browser, "carol", "correct horse")
    assert browser.get("/").status_code == 200
    assert_error(browser.get("/api/v1/jobs"), 401, "unauthorized")
    assert_error(browser.post("/api/v1/tokens", json={"name": "x"}), 401, "unauthorized")


def test_forms_keep_csrf_when_logged_in(browser):
    carol = make_user("carol", password="correct horse")
    log_in(browser, "carol", "correct horse")
    job_id = f.make_train_job(f.make_dataset(), owner_id=carol.id)
    assert browser.post(f"/jobs/{job_id}/cancel").status_code == 400
    assert browser.get(f"/jobs/{job_id}.json").json["status"] == "queued"
    token = csrf(browser, f"/jobs/{job_id}")
    assert browser.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 302
    assert browser.get(f"/jobs/{job_id}.json").json["status"] == "cancelled"


def test_account_page_creates_shows_once_and_revokes_tokens(browser):
    make_user("carol", password="correct horse")
    log_in(browser, "carol", "correct horse")
    page = browser.post("/account", data={"csrf_token": csrf(browser, "/account"), "name": "laptop"})
    assert page.status_code == 200
    token = re.search(r'<pre id="new-token">([^<]+)</pre>', page.get_data(as_text=True)).group(1)
    assert browser.get("/api/v1/tokens", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    again = browser.get("/account").get_data(as_text=True)
    assert token not in again and "laptop" in again  # shown once
    with db.session() as session:
        token_id = session.scalar(select(ApiToken.id).where(ApiToken.name == "laptop"))
    revoke = browser.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf(browser, "/account")})
    assert revoke.status_code == 302
    assert browser.get("/api/v1/tokens", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_account_page_refuses_a_bad_token_name(browser):
    make_user("carol", password="correct horse")
    log_in(browser, "carol", "correct horse")
    page = browser.post("/account", data={"csrf_token": csrf(browser, "/account"), "name": "lap\x00top"})
    assert page.status_code == 400 and "NUL" in page.get_data(as_text=True)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ApiToken)) == 1  # only carol's first token


def test_tokens_are_stored_hashed(client):
    created = client.post("/api/v1/tokens", json={"name": "ci"}).json
    with db.session() as session:
        row = session.get(ApiToken, created["id"])
        assert row.token_hash == accounts.hash_token(created["token"]) != created["token"]
        assert created["token"] not in str([row.name, row.token_hash])


def test_admin_creates_a_user_who_can_use_the_api_at_once(client, anonymous):
    created = client.post("/api/v1/users", json={"username": "dave", "password": "s3cret-pass"})
    assert created.status_code == 201, created.json
    assert (created.json["username"], created.json["is_admin"]) == ("dave", False)
    headers = {"Authorization": f"Bearer {created.json['token']}"}
    assert anonymous.get("/api/v1/jobs", headers=headers).json["total"] == 0
    assert_error(client.post("/api/v1/users", json={"username": "dave"}), 409, "username_taken")
    assert_error(client.post("/api/v1/users", json={"username": "bad name!"}), 422, "validation_error")
    # the CLI reads all-digit arguments as ids: such a username would name someone else
    error = assert_error(client.post("/api/v1/users", json={"username": "12345"}), 422, "validation_error")
    assert "not a digit" in error["message"]


# ---------------------------------------------------------------- CLI and bootstrap


def test_cli_creates_lists_disables_users_and_tokens(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "erin", "--password", "long enough"])
    assert result.exit_code == 0, result.output
    token = re.search(r"API token \(shown only now\): (\S+)", result.output).group(1)
    assert app.test_client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert "erin\tuser\tactive" in runner.invoke(args=["users", "list"]).output
    result = runner.invoke(args=["tokens", "create", "--user", "erin", "deploy"])
    assert result.exit_code == 0 and "for erin: bq_" in result.output
    listed = runner.invoke(args=["tokens", "list", "--user", "erin"]).output
    assert "default\tactive" in listed and "deploy\tactive" in listed
    token_id = int(listed.split("\t")[0])
    assert runner.invoke(args=["tokens", "revoke", str(token_id)]).exit_code == 0
    assert app.test_client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert runner.invoke(args=["users", "disable", "erin"]).exit_code == 0
    assert "erin\tuser\tdisabled" in runner.invoke(args=["users", "list"]).output
    failed = runner.invoke(args=["users", "create", "erin"])
    assert failed.exit_code != 0 and "already taken" in failed.output
    for odd in ("\u00b2", "9" * 30):  # a superscript digit, an id past 2^63: "no such user", not a crash
        result = runner.invoke(args=["users", "disable", odd])
        assert result.exit_code == 1 and "does not exist" in result.output, result.output


def test_bootstrap_creates_one_admin_with_a_private_credentials_file(app, tmp_path):
    path = tmp_path / "admin_credentials"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["bootstrap", "--credentials-file", str(path)])
    assert result.exit_code == 0 and "created admin 'admin'" in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    headers = {"Authorization": f"Bearer {values['token']}"}
    assert app.test_client().get("/api/v1/users", headers=headers).json["items"][0]["is_admin"] is True
    with db.session() as session:
        assert accounts.check_login(session, "admin", values["password"]).is_admin
    again = runner.invoke(args=["bootstrap", "--credentials-file", str(path)])
    assert "nothing to do" in again.output
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_bootstrap_uses_the_configured_admin_token(settings, tmp_path):
    from web import create_app

    fixed = "a-deployment-token-of-32-chars!!"
    app = create_app({"TESTING": True, "SETTINGS": settings.replace(admin_token=fixed)})
    path = tmp_path / "creds"
    assert app.test_cli_runner().invoke(args=["bootstrap", "--credentials-file", str(path)]).exit_code == 0
    assert fixed not in path.read_text()  # the file never repeats a secret the operator already has
    assert app.test_client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {fixed}"}).status_code == 200


def test_an_admin_token_that_could_never_authenticate_is_refused():
    from core.config import Settings

    for unusable in ("short", " padded-token-of-16-chars ", "has a space inside it", "x" * 513):
        with pytest.raises(ValueError, match="16 to 512 printable characters"):
            Settings.from_env({"BERTQUEUE_ADMIN_TOKEN": unusable})
    assert Settings.from_env({"BERTQUEUE_ADMIN_TOKEN": "x" * 512}).admin_token == "x" * 512


# ---------------------------------------------------------------- sessions (issue 16 item 7)


def copy_of(client, app):
    """Another browser holding a copy of ``client``'s session cookie (a stolen or planted one)."""
    other = app.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    return other


@pytest.fixture
def csrf_app(settings):
    from web import create_app

    return create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": True})


def test_a_session_planted_before_login_and_its_csrf_token_die_at_login(csrf_app):
    """An attacker plants their anonymous session cookie in the victim's browser: after the victim logs in, neither
    that cookie nor its CSRF token can act as the victim (here: cancel the victim's job)."""
    carol = make_user("carol", password="correct horse")
    job_id = f.make_classify_job(f.make_model(), ["a"], owner_id=carol.id)
    attacker = csrf_app.test_client()
    planted_token = csrf(attacker, "/login")
    victim = copy_of(attacker, csrf_app)
    assert victim.post("/login", data={"csrf_token": planted_token, "username": "carol",
                                       "password": "correct horse"}).status_code == 302
    assert victim.get("/").status_code == 200
    refused = victim.post(f"/jobs/{job_id}/cancel", data={"csrf_token": planted_token})
    assert refused.status_code == 400
    assert attacker.get("/").status_code == 302  # the planted cookie itself was not logged in
    with db.session() as session:
        assert session.get(Job, job_id).status == "queued"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sessions_app(request, settings):
    """``csrf_app`` on the test's SQLite file, or on a private PostgreSQL schema."""
    from web import create_app

    if request.param == "postgresql":
        from core.schema import Base

        settings = settings.replace(database_url=request.getfixturevalue("postgres_schema_url"))
        app = create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": True})
        Base.metadata.create_all(db.engine)
        return app
    return create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": True})


def logged_in(app, username: str = "carol", password: str = "correct horse", agent: str = "test-browser"):
    """A new browser (its own login) of ``username``."""
    browser = app.test_client()
    browser.environ_base["HTTP_USER_AGENT"] = agent
    assert log_in(browser, username, password).status_code == 302
    return browser


def test_logout_ends_this_login_and_its_copies_but_not_the_users_other_logins(sessions_app):
    make_user("carol", password="correct horse")
    browser, laptop = logged_in(sessions_app), logged_in(sessions_app)
    stolen = copy_of(browser, sessions_app)
    assert stolen.get("/").status_code == 200
    response = browser.post("/logout", data={"csrf_token": csrf(browser, "/")})
    assert response.status_code == 302
    assert "Logged out on this device" in browser.get("/login").get_data(as_text=True)
    assert browser.get("/").status_code == 302 and stolen.get("/").status_code == 302
    assert laptop.get("/").status_code == 200  # another device stays logged in
    assert log_in(browser, "carol", "correct horse").status_code == 302 and browser.get("/").status_code == 200


@pytest.mark.parametrize("how", ["password change", "disable", "api logout everywhere", "page logout everywhere"])
def test_sessions_end_on_password_change_disable_and_logout_everywhere(sessions_app, how):
    carol = make_user("carol", password="correct horse")
    browser, laptop = logged_in(sessions_app), logged_in(sessions_app)
    stolen = copy_of(browser, sessions_app)
    assert browser.get("/").status_code == 200
    with db.session() as session:
        if how == "password change":
            accounts.set_password(session, "carol", "battery staple")
        elif how == "disable":
            accounts.disable_user(session, "carol")
    if how == "api logout everywhere":
        api = api_client(sessions_app, carol)
        response = api.delete("/api/v1/sessions")
        assert response.status_code == 200 and response.json["username"] == "carol"
        assert api.get("/api/v1/tokens").status_code == 200  # API tokens are separate credentials: they stay
    if how == "page logout everywhere":
        assert laptop.post("/account/logout-all").status_code == 400  # CSRF-protected
        response = laptop.post("/account/logout-all", data={"csrf_token": csrf(laptop, "/account")})
        assert response.status_code == 302 and response.headers["Location"] == "/login"
    for client in (browser, laptop, stolen):
        assert client.get("/").status_code == 302
    with db.session() as session:  # every login row is revoked, not only refused
        assert session.scalar(select(func.count()).select_from(LoginSession)
                              .where(LoginSession.revoked_at.is_(None))) == 0
    if how == "password change":  # a fresh login with the new password works, and tokens still do
        assert log_in(browser, "carol", "battery staple").status_code == 302 and browser.get("/").status_code == 200
        assert api_client(sessions_app, carol).get("/api/v1/tokens").status_code == 200


def test_a_login_ends_after_its_lifetime_however_active(sessions_app, settings, monkeypatch):
    from datetime import timedelta

    from core.schema import utcnow

    lifetime_s = settings.session_lifetime_hours * 3600
    assert sessions_app.permanent_session_lifetime.total_seconds() == lifetime_s
    assert sessions_app.config["WTF_CSRF_TIME_LIMIT"] == lifetime_s
    make_user("carol", password="correct horse")
    browser = logged_in(sessions_app)
    monkeypatch.setattr(accounts, "utcnow", lambda: utcnow() + timedelta(seconds=lifetime_s - 100))
    assert browser.get("/").status_code == 200  # active: the cookie is re-signed, but the login's age counts
    monkeypatch.setattr(accounts, "utcnow", lambda: utcnow() + timedelta(seconds=lifetime_s + 100))
    assert browser.get("/").status_code == 302
    # the next login deletes the user's expired (and revoked) rows: the table keeps about one row per device
    assert log_in(browser, "carol", "correct horse").status_code == 302 and browser.get("/").status_code == 200
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(LoginSession)) == 1


def test_the_account_page_lists_the_users_live_logins(sessions_app):
    make_user("carol", password="correct horse")
    make_user("dave", password="correct horse")
    phone = logged_in(sessions_app, agent="Phone\x00Browser/1.0 " + "x" * 300)
    gone = logged_in(sessions_app, agent="Gone/2.0")
    gone.post("/logout", data={"csrf_token": csrf(gone, "/")})
    logged_in(sessions_app, "dave", agent="DaveBrowser/3.0")
    laptop = logged_in(sessions_app, agent="Laptop/4.0")
    page = laptop.get("/account")
    assert page.status_code == 200
    table = re.search(r'<table class="table" id="logins-table">(.*?)</table>', page.get_data(as_text=True), re.S)
    rows = re.findall(r"<tr(?: id=\"this-login\")?>.*?</tr>", table.group(1), re.S)[1:]  # past the header
    assert len(rows) == 2  # carol's live logins: not the logged-out one, not dave's
    assert 'id="this-login"' in rows[0] and "Laptop/4.0" in rows[0] and "this device" in rows[0]
    assert "127.0.0.1" in rows[0]
    assert "PhoneBrowser/1.0 " in rows[1] and "this device" not in rows[1]  # NUL dropped, cut at 200 characters
    assert "x" * 200 not in rows[1] and "x" * 180 in rows[1]
    assert phone.get("/").status_code == 200
    with db.session() as session:
        agents = session.scalars(select(LoginSession.user_agent)).all()
        assert max(len(a) for a in agents) == 200


def test_session_cookie_flags(settings):
    from web import create_app

    secure = create_app({"TESTING": True, "SETTINGS": settings.replace(session_cookie_secure=True)})
    assert secure.config["SESSION_COOKIE_SECURE"] is True
    plain = create_app({"TESTING": True, "SETTINGS": settings})
    assert plain.config["SESSION_COOKIE_SECURE"] is False and plain.config["SESSION_COOKIE_HTTPONLY"] is True
    assert plain.config["SESSION_COOKIE_SAMESITE"] == "Lax"


# ---------------------------------------------------------------- login throttling and body limits (item 6)


def test_failed_logins_are_throttled_per_address_and_per_account(settings):
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(login_rate_limit="3 per minute"),
                      "WTF_CSRF_ENABLED": True})
    make_user("carol", password="correct horse")
    make_user("dave", password="correct horse")
    browser = app.test_client()
    assert log_in(browser, "carol", "correct horse").status_code == 302  # a success is not counted
    for _ in range(3):
        assert log_in(browser, "carol", "wrong").status_code == 401
    throttled = log_in(browser, "carol", "correct horse")  # the right password, but no check any more
    assert throttled.status_code == 429 and "Too many failed logins" in throttled.get_data(as_text=True)
    assert 'id="login-form"' in throttled.get_data(as_text=True)
    # another address, the same account: still throttled (per account)
    elsewhere = app.test_client()
    token = csrf(elsewhere, "/login")
    response = elsewhere.post("/login", data={"csrf_token": token, "username": "carol", "password": "correct horse"},
                              environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert response.status_code == 429
    # the same address, another account: throttled too (per address); another address and account: fine
    assert log_in(browser, "dave", "correct horse").status_code == 429
    response = elsewhere.post("/login", data={"csrf_token": token, "username": "dave", "password": "correct horse"},
                              environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert response.status_code == 302


def test_logins_work_when_the_limiter_redis_is_down(settings):
    import socket

    from web import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0", celery_eager=False,
                            login_rate_limit="2 per minute")
    app = create_app({"TESTING": True, "SETTINGS": down, "WTF_CSRF_ENABLED": True})
    make_user("carol", password="correct horse")
    browser = app.test_client()
    assert log_in(browser, "carol", "wrong").status_code == 401
    assert log_in(browser, "carol", "correct horse").status_code == 302
    for _ in range(2):
        log_in(browser, "carol", "wrong")
    assert log_in(browser, "carol", "correct horse").status_code == 429  # counted in memory meanwhile


def test_an_anonymous_huge_form_is_refused_before_it_is_parsed(csrf_app, monkeypatch):
    """45 MB of urlencoded form to the login page: 413 from the Content-Length, the body never parsed."""
    from werkzeug import formparser

    parsed = []
    real = formparser.FormDataParser.parse
    monkeypatch.setattr(formparser.FormDataParser, "parse",
                        lambda self, *a, **k: parsed.append(1) or real(self, *a, **k))
    body = b"username=" + b"a" * (45 * 1024 * 1024)
    response = csrf_app.test_client().post("/login", data=body,
                                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413 and parsed == []
    # the same for a page that takes uploads once logged in (the dataset form), when anonymous
    response = csrf_app.test_client().post("/datasets", data=b"x=" + b"a" * (2 * 1024 * 1024),
                                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413 and parsed == []


def test_the_api_answers_413_json_past_the_body_limit_but_keeps_upload_limits(settings):
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_body_kb=4)})
    client = api_client(app)
    assert_error(client.post("/api/v1/tokens", json={"name": "x" * 8000}), 413, "payload_too_large")
    texts = ["a longer text of some words"] * 400  # ~12 KB: a /predict body is an upload (MAX_UPLOAD_MB)
    response = client.post("/api/v1/jobs/classify", json={"model_id": 999, "texts": texts})
    assert response.status_code == 404  # read and validated: only the model is unknown


def test_a_login_rate_limit_that_cannot_be_read_is_refused_at_start(settings):
    from web import create_app

    with pytest.raises(ValueError, match="LOGIN_RATE_LIMIT"):
        create_app({"TESTING": True, "SETTINGS": settings.replace(login_rate_limit="ten a minute")})
