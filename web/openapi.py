"""The OpenAPI 3.1 document, generated from the app's routes and what each declared with ``@documented``.

:func:`build_document` walks ``app.url_map``: every rule of the ``api`` blueprint becomes an operation whose
path parameters come from the rule's converters, query parameters from its query model (``web.queries``), body
from its request model (``core.specs``) and answers from its response models (``web.schemas``): the models that
validate the route. What routes share is added here, in :func:`_shared_responses`: every operation needs
``Authorization: Bearer <token>`` (the ``bearerAuth`` scheme, document-wide) except the open ones (probes and
this document); the others may answer 401, with a body (any write) 415, creating a job 429; a JSON body or a
query string implies 400 (and a body 422), a path id 404.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterator

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

from core.specs import MAX_SQL_ID

from . import schemas
from .api.apidoc import Answer, Operation, operation_of
from .api.request_args import parameter_schemas
from .auth import OPEN_ENDPOINTS

SECURITY_SCHEME = "bearerAuth"
BLUEPRINT = "api"
DOCUMENTED_METHODS = ("get", "post", "put", "patch", "delete")  # HEAD and OPTIONS are Flask's, implied
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})
_EXTENSION_KEY = "bertqueue.openapi"
_REF = "#/components/schemas/{model}"

_SQL_ID = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_SQL_ID}
# what a string path segment can hold (web.guards: no NUL; Werkzeug: no slash)
_SEGMENT = {"type": "string", "minLength": 1, "pattern": "^[^/\\u0000]+$"}
_CONVERTER_SCHEMAS = {"int": _SQL_ID, "default": _SEGMENT, "string": _SEGMENT}
# path parameters whose values have a known shape, whatever the converter: a job id is a UUID (core.schema.Job), so
# the document never suggests that /api/v1/jobs/train (a POST-only route: 405 to a GET) names a job
_NAMED_SCHEMAS = {"job_id": {"type": "string", "format": "uuid"}}
_RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")

BAD_REQUEST = Answer("malformed request (bad JSON, body not an object, bad query parameter)")
INVALID = Answer("the body failed validation (missing/unknown fields, wrong types, out-of-range values)")
NOT_FOUND = Answer("no such resource")
UNAUTHORIZED = Answer(
    "no API token, or an invalid or revoked one, or its user is disabled",
    headers={"WWW-Authenticate": 'Bearer realm="bertqueue"'},
)
UNSUPPORTED = Answer("the body is not application/json (multipart/form-data for a dataset upload)")
TOO_MANY = Answer("the user already has MAX_ACTIVE_JOBS_PER_USER queued or running jobs (too_many_active_jobs)")

INFO = {
    "title": "bertqueue",
    "version": "1.0.0",
    "description": "Train and serve BERT-family text classifiers through a job queue. Send "
    "`Authorization: Bearer <token>` (an admin creates users; each user makes their own tokens). "
    "JSON bodies must be `application/json`.",
}


def api_rules(app: Flask) -> Iterator[Rule]:
    """The rules of the API blueprint (``/api/v1/...``, the probes, ``/metrics``), in registration order."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(f"{BLUEPRINT}."):
            yield rule


def document_path(rule: Rule) -> str:
    """``/api/v1/models/<int:model_id>`` as ``/api/v1/models/{model_id}``."""
    return _RULE_ARGUMENT.sub(lambda m: "{" + m["name"] + "}", rule.rule)


def _path_parameters(rule: Rule) -> list[dict]:
    parameters = []
    for match in _RULE_ARGUMENT.finditer(rule.rule):
        converter = match["converter"] or "default"
        if converter not in _CONVERTER_SCHEMAS:
            raise ValueError(f"{rule.rule}: no schema for the path converter {converter!r}")
        schema = _NAMED_SCHEMAS.get(match["name"], _CONVERTER_SCHEMAS[converter])
        parameter = {"name": match["name"], "in": "path", "required": True, "schema": dict(schema)}
        if converter == "int":
            parameter["example"] = 1
        parameters.append(parameter)
    return parameters


def _query_parameters(model: type[BaseModel]) -> list[dict]:
    parameters = []
    for name, schema in parameter_schemas(model).items():
        schema = copy.deepcopy(schema)
        description = schema.pop("description", None)
        parameter = {"name": name, "in": "query", "required": model.model_fields[name].is_required(),
                     "schema": schema}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": _REF.format(model=model.__name__)}


def _response(answer: Answer) -> dict:
    response: dict = {"description": answer.description}
    if answer.headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in answer.headers.items()
        }
    if answer.content is not None:
        response["content"] = copy.deepcopy(dict(answer.content))
    elif answer.model is not None:
        response["content"] = {"application/json": {"schema": _ref(answer.model)}}
    return response


def _shared_responses(operation: Operation, method: str, rule: Rule, open_: bool) -> dict[int, Answer]:
    """The answers an operation gives because of what it is, unless it declared its own for that status."""
    shared: dict[int, Answer] = {}
    if operation.body is not None or operation.form is not None or operation.query is not None:
        shared[400] = BAD_REQUEST
    if operation.body is not None:
        shared[422] = INVALID
    if rule.arguments:
        shared[404] = NOT_FOUND
    if not open_:
        shared[401] = UNAUTHORIZED
        if method in WRITE_METHODS:  # web.guards: any API body must be JSON (multipart for an upload)
            shared[415] = UNSUPPORTED
        if operation.creates_job:
            shared[429] = TOO_MANY
    return shared


def _operation(rule: Rule, method: str, operation: Operation, open_: bool) -> dict:
    result: dict = {"operationId": rule.endpoint.removeprefix(f"{BLUEPRINT}."), "summary": operation.summary}
    if operation.description:
        result["description"] = operation.description
    parameters = _path_parameters(rule) + (_query_parameters(operation.query) if operation.query else [])
    if parameters:
        result["parameters"] = parameters
    if operation.body is not None:
        result["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(operation.body)}}}
    elif operation.form is not None:
        result["requestBody"] = {
            "required": True, "content": {"multipart/form-data": {"schema": _ref(operation.form)}}
        }
    answers = {**_shared_responses(operation, method, rule, open_), **operation.responses}
    result["responses"] = {str(status): _response(answers[status]) for status in sorted(answers)}
    if open_:
        result["security"] = []
    return result


def _components(operations: list[Operation]) -> dict:
    """JSON schemas of every request model (validation mode) and response model (serialization mode) in use."""
    requests = {m for op in operations for m in (op.body, op.form) if m is not None}
    responses = {schemas.Error} | {a.model for op in operations for a in op.responses.values() if a.model is not None}
    pairs = [(m, "validation") for m in sorted(requests, key=lambda m: m.__name__)]
    pairs += [(m, "serialization") for m in sorted(responses, key=lambda m: m.__name__)]
    _, top = models_json_schema(pairs, ref_template=_REF)
    return top.get("$defs", {})


def build_document(app: Flask) -> dict:
    """The OpenAPI 3.1 document of ``app``'s API routes (documented ones; see tests/web/test_openapi.py)."""
    paths: dict[str, dict] = {}
    used: list[Operation] = []
    for rule in api_rules(app):
        operation = operation_of(app.view_functions.get(rule.endpoint))
        if operation is None:
            continue
        used.append(operation)
        open_ = rule.endpoint in OPEN_ENDPOINTS
        item = paths.setdefault(document_path(rule), {})
        for method in DOCUMENTED_METHODS:
            if method.upper() in (rule.methods or ()):
                item[method] = _operation(rule, method, operation, open_)
    return {
        "openapi": "3.1.0",
        "info": dict(INFO),
        "paths": paths,
        "components": {
            "schemas": _components(used),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token (POST /api/v1/tokens, or the admin's)",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def openapi_document(app: Flask) -> dict:
    """``app``'s OpenAPI document, built once per app (the routes are fixed once the app is made)."""
    document = app.extensions.get(_EXTENSION_KEY)
    if document is None:
        document = app.extensions[_EXTENSION_KEY] = build_document(app)
    return document
