"""The API against its own OpenAPI document: schemathesis generates requests (valid ones and broken ones) for every
operation, sent with an admin's token, and no answer may be a server error.

A few rows exist for generated ids to hit (a dataset, a model, a classify job); enqueueing is faked for tests/web
(``sent``), and a fake worker cancels every new job at once, so /predict never waits. Examples per operation are
bounded to keep the run short.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import update

from core import jobs as job_states
from core.accounts import hash_token
from core.db import db
from core.schema import ApiToken
from core.specs import MAX_SQL_ID

from web.openapi import openapi_document

from . import factories as f

EXAMPLES_PER_OPERATION = 25


def _cancel_now(job_id: str, _job_type: str) -> None:
    with db.session() as session:
        job_states.cancel(session, job_id)


@pytest.fixture
def seeded_app(app, sent):
    """The test app with a few rows for generated ids to hit, and a fake worker that cancels each new job."""
    dataset = f.make_dataset()
    model = f.make_model()
    f.make_classify_job(model, ["a text"])
    f.make_train_job(dataset)
    sent.workers.append(_cancel_now)
    return app


# The document is static (built from the request and response models), so it is loaded at collection and each
# call names the app. schemathesis.pytest.from_fixture would load it per test, but 4.32.5's lazy loader breaks
# on pytest 9 (it sets Node._nodeid, which pytest 9 no longer has).
schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure here is reproducible, never flaky
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, seeded_app, admin_token):
    # A generated DELETE /api/v1/tokens/{id} may revoke the very token the examples are sent with; each example
    # starts with it valid again, so the rest of them test the operation, not the 401 path.
    with db.session() as session:
        session.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(admin_token)).values(revoked_at=None))
    case.call_and_validate(
        app=seeded_app, headers={"Authorization": f"Bearer {admin_token}"}, checks=[not_a_server_error]
    )


def test_document_declares_bearer_auth_and_shared_answers(client):
    """What schemathesis relies on, and clients read: who needs a token, and the 401/415/429 answers."""
    doc = client.get("/api/v1/openapi.json").json
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "an API token (POST /api/v1/tokens, or the admin's)"
    }
    assert doc["security"] == [{"bearerAuth": []}]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            open_ = path in {"/healthz", "/readyz", "/api/v1/openapi.json"}
            assert (operation.get("security") == []) is open_, (method, path)
            assert ("401" in operation["responses"]) is not open_, (method, path)
            assert ("415" in operation["responses"]) is ("requestBody" in operation), (method, path)
            creates_job = (method, path) in {("post", "/api/v1/jobs/train"), ("post", "/api/v1/jobs/classify"),
                                             ("post", "/api/v1/predict")}
            assert ("429" in operation["responses"]) is creates_job, (method, path)
    assert doc["paths"]["/api/v1/models/{model_id}"]["get"]["parameters"][0]["schema"]["maximum"] == MAX_SQL_ID


def test_document_describes_the_account_endpoints(client):
    doc = client.get("/api/v1/openapi.json").json
    paths, components = doc["paths"], doc["components"]["schemas"]
    assert set(paths["/api/v1/users"]) == {"post", "get"} and set(paths["/api/v1/users/{user_id}"]) == {"delete"}
    assert set(paths["/api/v1/tokens"]) == {"post", "get"} and set(paths["/api/v1/tokens/{token_id}"]) == {"delete"}
    assert "403" in paths["/api/v1/users"]["post"]["responses"]
    assert paths["/api/v1/users"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewUser"
    }
    user_create = components["UserCreate"]
    assert user_create["required"] == ["username"] and user_create["additionalProperties"] is False
    assert user_create["properties"]["username"]["maxLength"] == 64
    assert set(components["NewToken"]["required"]) >= {"id", "name", "created_at", "token"}
    assert set(components["TokenList"]["properties"]) == {"items", "total"}


def test_account_answers_match_the_documented_schemas(client):
    """The account endpoints' real answers validate against the response models the document is built from."""
    from web import schemas

    new_user = client.post("/api/v1/users", json={"username": "ann", "password": "a long password"})
    assert new_user.status_code == 201, new_user.json
    schemas.NewUser.model_validate(new_user.json)
    schemas.UserList.model_validate(client.get("/api/v1/users").json)
    new_token = client.post("/api/v1/tokens", json={"name": "laptop"})
    assert new_token.status_code == 201, new_token.json
    schemas.NewToken.model_validate(new_token.json)
    schemas.TokenList.model_validate(client.get("/api/v1/tokens").json)
    revoked = client.delete(f"/api/v1/tokens/{new_token.json['id']}")
    assert revoked.status_code == 200 and schemas.Token.model_validate(revoked.json).revoked_at is not None
    disabled = client.delete(f"/api/v1/users/{new_user.json['id']}")
    assert disabled.status_code == 200 and schemas.User.model_validate(disabled.json).disabled_at is not None
