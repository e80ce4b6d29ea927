"""The API against the OpenAPI document it serves: schemathesis generates requests (valid ones and broken ones) for
every operation and runs every check but positive-data acceptance (a schema-valid request may still name a
dataset that does not exist, so a 404 or 422 there is no bug): no server error, only documented status codes,
content types, headers and bodies, broken requests rejected, 405 with an ``Allow`` header for undocumented
methods, ``Allow`` listing exactly the documented methods, auth not ignored.

Each example runs as an admin and as a normal user. A few rows exist for generated ids to hit (a dataset, a
model, a classify and a train job, owned by the caller); enqueueing is faked for tests/web (``sent``), and a fake
worker cancels every new job at once, so /predict never waits. Examples per operation are bounded and
derandomized: the run is short and the same on every run.
"""
from __future__ import annotations

import json

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import update

from core import jobs as job_states
from core.accounts import hash_token
from core.db import db
from core.schema import ApiToken
from tests.factories import make_user
from web import api, guards
from web.openapi import build_document

from . import factories as f

EXAMPLES_PER_OPERATION = 12


def _routes_document() -> dict:
    """The document of an app holding only the API's routes: the schema must exist when tests are collected,
    before any test has settings or a database. Each test checks that its app serves this very document."""
    app = Flask("routes")
    guards.register(app)  # the bounded converters, as in web.create_app
    app.register_blueprint(api.bp)
    return json.loads(json.dumps(build_document(app)))


class Target:
    """Where schemathesis sends every request (the checks' own probes included) and as whom: the running test's
    app and caller."""

    app: Flask | None = None
    token: str | None = None

    def __call__(self, environ, start_response):
        assert self.app is not None, "no test app: use the served_app fixture"
        return self.app(environ, start_response)


TARGET = Target()
# The document is loaded at collection and every request goes to the running test's app through TARGET.
# (schemathesis.pytest.from_fixture would load it per test, but 4.32.5's lazy loader breaks on pytest 9: it sets
# Node._nodeid, which pytest 9 no longer has.)
schema = schemathesis.openapi.from_dict(_routes_document())
schema.app = TARGET


@schema.auth(refresh_interval=None, retry_on=[])
class CallerToken:
    """The caller's token as schemathesis's own auth, so the cases that test a missing or broken Authorization
    header are sent without it (a header passed to call_and_validate would be added to them too)."""

    def get(self, case, context):
        return TARGET.token

    def set(self, case, token, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def _cancel_now(job_id: str, _job_type: str) -> None:
    with db.session() as session:
        job_states.cancel(session, job_id)


@pytest.fixture(params=["admin", "user"])
def caller(request, settings):
    """The user the examples are sent as: an admin, or a normal user (403 on admin routes)."""
    return make_user(request.param, is_admin=request.param == "admin")


@pytest.fixture
def served_app(app, sent, caller):
    """The test app, serving the collected document, with rows of the caller's for generated ids to hit and a fake
    worker that cancels each new job."""
    assert app.test_client().get("/api/v1/openapi.json").json == schema.raw_schema
    dataset = f.make_dataset(owner_id=caller.id)
    model = f.make_model(owner_id=caller.id)
    f.make_classify_job(model, ["a text"], owner_id=caller.id)
    f.make_train_job(dataset, owner_id=caller.id)
    sent.workers.append(_cancel_now)
    TARGET.app, TARGET.token = app, caller.token
    yield app
    TARGET.app = TARGET.token = None


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure here is reproducible, never flaky
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_document(case, served_app, caller):
    # A generated DELETE /api/v1/tokens/{id} may revoke the very token the examples are sent with; each example
    # starts with it valid again, so the rest of them test the operation, not the 401 path.
    with db.session() as session:
        session.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(caller.token)).values(revoked_at=None))
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
