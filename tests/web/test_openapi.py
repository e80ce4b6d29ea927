"""The OpenAPI document is generated from the routes: every API route is in it with its methods and path
parameters, its query bounds and enums are the ones enforced, and a new route is documented by its own decorator."""
from __future__ import annotations

import re

import pytest
from flask import Blueprint, Flask
from pydantic import BaseModel, Field

from core.specs import MAX_SQL_ID
from web import errors, guards, schemas
from web.api.apidoc import Answer, documented
from web.context import EXTENSION_KEY, WebState
from web.openapi import build_document
from web.queries import QueryModel

from . import factories as f
from .helpers import assert_error

OPEN_PATHS = {"/healthz", "/readyz", "/api/v1/openapi.json"}
JOB_CREATING = {("post", "/api/v1/jobs/train"), ("post", "/api/v1/jobs/classify"), ("post", "/api/v1/predict"),
                ("post", "/api/v1/jobs/evaluate")}


def _documented_routes(app) -> dict[str, dict[str, set[str]]]:
    """{OpenAPI path: {method: path parameter names}} for every API route of ``app.url_map``, read from the map."""
    routes: dict[str, dict[str, set[str]]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("pages."):
            continue
        assert rule.rule.startswith("/api/v1/") or rule.rule in {"/healthz", "/readyz", "/metrics"}, rule.rule
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.setdefault(path, {})[method.lower()] = set(rule.arguments)
    return routes


def test_every_route_is_documented_with_its_methods_and_path_parameters(client, app):
    doc = client.get("/api/v1/openapi.json").json
    routes = _documented_routes(app)
    assert {"/api/v1/jobs/train", "/api/v1/jobs/{job_id}", "/metrics", "/healthz"} <= set(routes)
    assert set(doc["paths"]) == set(routes)
    for path, methods in routes.items():
        assert set(doc["paths"][path]) == set(methods), path
        for method, arguments in methods.items():
            operation = doc["paths"][path][method]
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == arguments, (method, path)
            assert operation["summary"] and operation["responses"], (method, path)


def test_document_declares_bearer_auth_and_shared_answers(client):
    """What schemathesis relies on, and clients read: who needs a token, and the 401/415/429 answers."""
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "an API token (POST /api/v1/tokens, or the admin's)"
    }
    assert doc["security"] == [{"bearerAuth": []}]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            open_ = path in OPEN_PATHS
            assert (operation.get("security") == []) is open_, (method, path)
            assert ("401" in operation["responses"]) is not open_, (method, path)
            # web.guards: any API body must be JSON (multipart for an upload), also on writes that read none
            assert ("415" in operation["responses"]) is (method != "get"), (method, path)
            assert ("429" in operation["responses"]) is ((method, path) in JOB_CREATING), (method, path)
            if "requestBody" in operation:
                assert {"400", "422"} <= set(operation["responses"]) or path == "/api/v1/datasets", (method, path)
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


def _query_parameters(doc) -> list[tuple[str, dict]]:
    """(path, parameter) of every query parameter of a GET without path parameters (no ids to invent)."""
    return [
        (path, parameter)
        for path, operations in doc["paths"].items()
        if "{" not in path and "get" in operations
        for parameter in operations["get"].get("parameters", [])
        if parameter["in"] == "query"
    ]


def test_documented_query_bounds_and_enums_are_the_enforced_ones(client):
    doc = client.get("/api/v1/openapi.json").json
    checked = 0
    for path, parameter in _query_parameters(doc):
        name, schema = parameter["name"], parameter["schema"]
        if "maximum" in schema and schema["maximum"] < MAX_SQL_ID:
            assert client.get(f"{path}?{name}={schema['maximum']}").status_code == 200, (path, name)
            assert_error(client.get(f"{path}?{name}={schema['maximum'] + 1}"), 400, "invalid_parameter")
            checked += 1
        if "minimum" in schema:
            assert client.get(f"{path}?{name}={schema['minimum']}").status_code == 200, (path, name)
            error = assert_error(client.get(f"{path}?{name}={schema['minimum'] - 1}"), 400, "invalid_parameter")
            assert name in error["message"]
            checked += 1
        if "enum" in schema:
            for value in schema["enum"]:
                assert client.get(f"{path}?{name}={value}").status_code == 200, (path, name, value)
            for value in ("", "nope"):  # an empty value is a value, outside the enum
                error = assert_error(client.get(f"{path}?{name}={value}"), 400, "invalid_parameter")
                assert ", ".join(schema["enum"]) in error["message"]
            checked += 1
    assert checked >= 10  # limit/offset of five lists, the job list's filters


def test_a_query_parameter_is_given_once(client):
    error = assert_error(client.get("/api/v1/jobs?limit=1&limit=2"), 400, "invalid_parameter")
    assert "limit is given 2 times" in error["message"]


def test_bodies_are_validated_strictly_as_documented(client):
    """The document says integer or boolean: a string or number that pydantic could coerce is still a 422."""
    model_id = f.make_model()
    assert_error(client.patch(f"/api/v1/models/{model_id}", json={"quantize": 0}), 422, "validation_error")
    assert_error(client.patch(f"/api/v1/models/{model_id}", json={"quantize": "true"}), 422, "validation_error")
    assert client.patch(f"/api/v1/models/{model_id}", json={"quantize": True}).status_code == 200
    body = {"dataset_id": f.make_dataset(), "text_column": "text", "label_column": "label", "epochs": "1"}
    assert "epochs" in assert_error(client.post("/api/v1/jobs/train", json=body), 422)["message"]


def test_405_and_options_list_the_resource_s_own_methods(client):
    """A static route's path is its own resource: GET /api/v1/jobs/train is no lookup of a job named "train"."""
    for path, allow in [("/api/v1/jobs/train", "OPTIONS, POST"), ("/api/v1/models", "GET, HEAD, OPTIONS"),
                        ("/api/v1/models/1", "DELETE, GET, HEAD, OPTIONS, PATCH")]:
        assert client.options(path).headers["Allow"] == allow, path
        wrong = client.put(path, json={})
        assert_error(wrong, 405, "method_not_allowed")
        assert wrong.headers["Allow"] == allow, path


class _Filters(QueryModel):
    size: int = Field(default=5, ge=1, le=9, description="how many")
    colour: str | None = Field(default=None, description="a colour")


class _Thing(BaseModel):
    name: str = Field(max_length=3)


def test_a_new_route_is_documented_by_its_own_decorator(settings):
    """The mechanism, on a blueprint of its own: body and query are validated and passed; the document follows."""
    bp = Blueprint("api", __name__)

    @bp.post("/api/v1/things/<int:thing_id>")
    @documented("Make a thing", body=_Thing, query=_Filters, creates_job=True,
                responses={201: Answer("made", schemas.Health), 409: "it exists"})
    def make_thing(thing_id: int, body: _Thing, query: _Filters):
        return {"status": f"{thing_id} {body.name} {query.size} {query.colour}"}, 201

    app = Flask(__name__)
    guards.register(app)
    app.register_blueprint(bp)
    app.extensions[EXTENSION_KEY] = WebState(settings=settings, celery=None, metrics=None)  # the deployment's limits
    errors.register(app)
    client = app.test_client()
    assert client.post("/api/v1/things/7?size=3", json={"name": "cup"}).json == {"status": "7 cup 3 None"}
    assert_error(client.post("/api/v1/things/7?size=10", json={"name": "cup"}), 400, "invalid_parameter")
    assert_error(client.post("/api/v1/things/7", json={"name": "mug!"}), 422, "validation_error")

    operation = build_document(app)["paths"]["/api/v1/things/{thing_id}"]["post"]
    assert operation["summary"] == "Make a thing" and operation["operationId"] == "make_thing"
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [
        ("thing_id", "path", True), ("size", "query", False), ("colour", "query", False)]
    assert operation["parameters"][1]["schema"] == {"default": 5, "maximum": 9, "minimum": 1, "type": "integer"}
    assert operation["parameters"][2]["schema"] == {"type": "string"}  # absent or a value: never null
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/_Thing"}
    assert set(operation["responses"]) == {"201", "400", "401", "404", "409", "415", "422", "429"}


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_open_paths_answer_without_a_token(anonymous, path):
    assert anonymous.get(path).status_code in (200, 503)
