"""The OpenAPI 3.1 document, built with apispec from the pydantic request (``core.specs``) and response
(``web.schemas``) models.

Every operation needs ``Authorization: Bearer <token>`` (the ``bearerAuth`` scheme, applied document-wide) except
the probes and this document; the answers every protected operation shares (401; 415 for a body; 429 for one that
creates a job) are added to the operations in one place, :func:`_add_shared_responses`.
"""
from __future__ import annotations

from functools import lru_cache

from apispec import APISpec
from pydantic.json_schema import models_json_schema

from core.schema import JobStatus, JobType
from core.specs import (
    MAX_SQL_ID,
    ClassifyRequest,
    ModelServingUpdate,
    PredictRequest,
    TokenCreate,
    TrainRequest,
    UserCreate,
)

from . import schemas

REQUEST_MODELS = (TrainRequest, ClassifyRequest, PredictRequest, ModelServingUpdate, UserCreate, TokenCreate)
RESPONSE_MODELS = (
    schemas.Error,
    schemas.Job,
    schemas.JobList,
    schemas.Dataset,
    schemas.DatasetList,
    schemas.Model,
    schemas.ModelList,
    schemas.PredictionPage,
    schemas.PredictResponse,
    schemas.Health,
    schemas.User,
    schemas.NewUser,
    schemas.UserList,
    schemas.Token,
    schemas.NewToken,
    schemas.TokenList,
)

SECURITY_SCHEME = "bearerAuth"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/api/v1/openapi.json"})  # answer without a token
JOB_CREATING = frozenset(
    {("/api/v1/jobs/train", "post"), ("/api/v1/jobs/classify", "post"), ("/api/v1/predict", "post")}
)


def _json(schema: str) -> dict:
    """A JSON body of component ``schema`` (an explicit $ref: responses added after apispec ran need one too)."""
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _response(description: str, schema: str = "Error", headers: dict | None = None) -> dict:
    response = {"description": description, **_json(schema)}
    if headers:
        response["headers"] = headers
    return response


_LOCATION = {"Location": {"description": "where to poll the job", "schema": {"type": "string"}}}
_BAD = _response("malformed request (bad JSON, body not an object, bad query parameter)")
_INVALID = _response("the body failed validation (missing/unknown fields, wrong types, out-of-range values)")
_NOT_FOUND = _response("no such resource")
_FORBIDDEN = _response("the token is valid but its user is not an admin")
_UNAUTHORIZED = {
    **_response("no API token, or an invalid or revoked one, or its user is disabled"),
    "headers": {"WWW-Authenticate": {"description": 'Bearer realm="bertqueue"', "schema": {"type": "string"}}},
}
_UNSUPPORTED = _response("the body is not application/json (multipart/form-data for a dataset upload)")
_TOO_MANY = _response("the user already has MAX_ACTIVE_JOBS_PER_USER queued or running jobs (too_many_active_jobs)")


_EXPORT_DESCRIPTION = (
    "Columns, in order: `index`, `id` (only for a job on a dataset with an `id_column`: the row's id), `text`, "
    "`label`, `score`, then `score_<label>` for each class in the model's label order. For a multitask model: "
    "`index`, `id`?, `text`, then per task `<task>_label`, `<task>_score`, `<task>_score_<label>`... "
    "CSV: RFC 4180 (CRLF, quoted only when needed), UTF-8 with a byte-order mark; floats are written so they "
    "parse back exactly, texts exactly as stored (nothing is escaped for spreadsheet formulas). "
    "JSONL: one JSON object per line with the same keys."
)


def _query(name: str, description: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_SQL_ID = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_SQL_ID}


def _path_param(name: str, kind: str) -> dict:
    param = {"name": name, "in": "path", "required": True, "schema": _SQL_ID if kind == "integer" else {"type": kind}}
    if kind == "integer":
        param["example"] = 1
    return param


def _paging(max_limit: int) -> list[dict]:
    return [
        _query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": max_limit}),
        _query("offset", "items to skip", _SQL_ID),
    ]


_PAGING = _paging(1000)


def _paths(spec: APISpec) -> None:
    job_id, dataset_id, model_id = _path_param("job_id", "string"), _path_param("dataset_id", "integer"), _path_param(
        "model_id", "integer"
    )
    spec.path(
        path="/api/v1/datasets",
        operations={
            "post": {
                "summary": "Upload a dataset: CSV (header row; comma, semicolon or tab separated), TSV or JSON Lines "
                "(one object per line, the first one's keys name the columns); UTF-8. The format comes from the "
                "file name's extension (.csv, .tsv/.tab, .jsonl/.ndjson), else from the content",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "name": {"type": "string", "maxLength": 200},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _response("stored", "Dataset"),
                    "400": _response("missing file, empty file, not UTF-8, malformed CSV/TSV/JSONL, ragged rows"),
                    "413": _response("larger than MAX_UPLOAD_MB"),
                },
            },
            "get": {
                "summary": "List datasets, newest first",
                "parameters": _PAGING,
                "responses": {"200": _response("datasets", "DatasetList"), "400": _BAD},
            },
        },
    )
    spec.path(
        path="/api/v1/datasets/{dataset_id}",
        operations={
            "get": {
                "summary": "A dataset with a preview of its first rows and per-column label counts",
                "parameters": [dataset_id],
                "responses": {"200": _response("the dataset", "Dataset"), "404": _NOT_FOUND},
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/train",
        operations={
            "post": {
                "summary": "Queue a training job",
                "requestBody": {"required": True, **_json("TrainRequest")},
                "responses": {
                    "202": _response("queued", "Job", _LOCATION),
                    "400": _BAD,
                    "404": _response("unknown dataset"),
                    "422": _response("invalid body, unknown column, fewer than 2 classes, a label longer than 200 "
                                     "characters (label_too_long), or too much work (training_too_large)"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/classify",
        operations={
            "post": {
                "summary": "Queue a classification job: texts, or a stored dataset's text column (+ id column)",
                "requestBody": {"required": True, **_json("ClassifyRequest")},
                "responses": {
                    "202": _response("queued", "Job", _LOCATION),
                    "400": _BAD,
                    "404": _response("unknown model or dataset"),
                    "422": _response("invalid body (texts and dataset_id both or neither given, ...), a column the "
                                     "dataset lacks (unknown_column), or a text column with no text (empty_column)"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/jobs",
        operations={
            "get": {
                "summary": "List jobs, newest first",
                "parameters": [
                    _query("status", "filter by status", {"type": "string", "enum": [s.value for s in JobStatus]}),
                    _query("type", "filter by type", {"type": "string", "enum": [t.value for t in JobType]}),
                    _query("model_id", "filter by model", _SQL_ID),
                    _query("dataset_id", "filter by dataset", _SQL_ID),
                    *_paging(500),
                ],
                "responses": {"200": _response("jobs", "JobList"), "400": _BAD},
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/{job_id}",
        operations={
            "get": {
                "summary": "A job's status, progress, params and metrics",
                "parameters": [job_id],
                "responses": {"200": _response("the job", "Job"), "404": _NOT_FOUND},
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/{job_id}/cancel",
        operations={
            "post": {
                "summary": "Cancel a queued or running job",
                "parameters": [job_id],
                "responses": {
                    "200": _response("cancelled", "Job"),
                    "404": _NOT_FOUND,
                    "409": _response("the job already finished"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/{job_id}/predictions",
        operations={
            "get": {
                "summary": "A classify job's predictions, ordered by index (partial while it runs)",
                "parameters": [
                    job_id,
                    _query("label", "only predictions of this label (multitask: the first task's label); "
                           "total counts the matching ones", {"type": "string"}),
                    *_PAGING,
                ],
                "responses": {
                    "200": _response("a page of predictions", "PredictionPage"),
                    "400": _BAD,
                    "404": _NOT_FOUND,
                    "409": _response("the job is a train job: it has no predictions"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/{job_id}/export",
        operations={
            "get": {
                "summary": "Download every prediction of a succeeded classify job as CSV or JSONL (streamed)",
                "description": _EXPORT_DESCRIPTION,
                "parameters": [
                    job_id,
                    _query("format", "csv (default) or jsonl", {"type": "string", "enum": ["csv", "jsonl"],
                                                                 "default": "csv"}),
                ],
                "responses": {
                    "200": {
                        "description": "the predictions, one row (CSV) or object (JSONL) each, ordered by index",
                        "headers": {
                            "Content-Disposition": {
                                "description": 'attachment; filename="job-<id>-predictions.csv" (or .jsonl)',
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {
                            "text/csv; charset=utf-8": {"schema": {"type": "string"}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _response("format is neither csv nor jsonl (invalid_parameter)"),
                    "404": _NOT_FOUND,
                    "409": _response(
                        "a train job (not_a_classify_job), or a classify job that has not succeeded (job_not_succeeded)"
                    ),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/models",
        operations={
            "get": {
                "summary": "List trained models, newest first",
                "parameters": _PAGING,
                "responses": {"200": _response("models", "ModelList"), "400": _BAD},
            }
        },
    )
    spec.path(
        path="/api/v1/models/{model_id}",
        operations={
            "get": {
                "summary": "A trained model",
                "parameters": [model_id],
                "responses": {"200": _response("the model", "Model"), "404": _NOT_FOUND},
            },
            "patch": {
                "summary": "Set the model's serving defaults (quantize); null returns a key to the deployment's",
                "parameters": [model_id],
                "requestBody": {"required": True, **_json("ModelServingUpdate")},
                "responses": {
                    "200": _response("the model", "Model"),
                    "400": _BAD,
                    "404": _NOT_FOUND,
                    "422": _INVALID,
                },
            },
        },
    )
    spec.path(
        path="/api/v1/predict",
        operations={
            "post": {
                "summary": "Classify texts and wait for the result (a classify job on the same queue)",
                "requestBody": {"required": True, **_json("PredictRequest")},
                "responses": {
                    "200": _response("predictions", "PredictResponse"),
                    "202": _response(
                        "not finished within timeout_s, or PREDICT_MAX_WAITERS calls already wait in this web "
                        "process (answered at once): poll the job", "Job", _LOCATION
                    ),
                    "400": _BAD,
                    "404": _response("unknown model"),
                    "409": _response("the job was cancelled"),
                    "422": _INVALID,
                    "500": _response("the job failed; error.message is the job's error"),
                },
            }
        },
    )
    spec.path(
        path="/healthz",
        operations={"get": {"summary": "Liveness: the process is up", "responses": {"200": _response("up", "Health")}}},
    )
    spec.path(
        path="/readyz",
        operations={
            "get": {
                "summary": "Readiness: database and broker reachable",
                "responses": {"200": _response("ready", "Health"), "503": _response("not ready", "Health")},
            }
        },
    )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics (admins only, unless METRICS_PUBLIC is set)",
                "responses": {
                    "200": {
                        "description": "text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}
                    },
                    "403": _FORBIDDEN,
                },
            }
        },
    )
    spec.path(
        path="/api/v1/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}
                    }
                },
            }
        },
    )
    _account_paths(spec)


def _account_paths(spec: APISpec) -> None:
    """Users (admins only) and the caller's own API tokens."""
    user_id, token_id = _path_param("user_id", "integer"), _path_param("token_id", "integer")
    spec.path(
        path="/api/v1/users",
        operations={
            "post": {
                "summary": "Create a user (admins only); the answer holds their first API token, shown only here",
                "requestBody": {"required": True, **_json("UserCreate")},
                "responses": {
                    "201": _response("created", "NewUser"),
                    "400": _BAD,
                    "403": _FORBIDDEN,
                    "409": _response("the username is taken (username_taken)"),
                    "422": _INVALID,
                },
            },
            "get": {
                "summary": "List users (admins only)",
                "parameters": _PAGING,
                "responses": {"200": _response("users", "UserList"), "400": _BAD, "403": _FORBIDDEN},
            },
        },
    )
    spec.path(
        path="/api/v1/users/{user_id}",
        operations={
            "delete": {
                "summary": "Disable a user (admins only): their tokens and logins stop working, their data stays",
                "parameters": [user_id],
                "responses": {
                    "200": _response("the disabled user", "User"),
                    "403": _FORBIDDEN,
                    "404": _NOT_FOUND,
                    "409": _response("an admin cannot disable themself (cannot_disable_self)"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/tokens",
        operations={
            "post": {
                "summary": "Create an API token for the caller; the token is shown only in this answer",
                "requestBody": {"required": True, **_json("TokenCreate")},
                "responses": {"201": _response("created", "NewToken"), "400": _BAD, "422": _INVALID},
            },
            "get": {
                "summary": "The caller's API tokens (metadata only: a token itself is never shown again)",
                "responses": {"200": _response("tokens", "TokenList")},
            },
        },
    )
    spec.path(
        path="/api/v1/tokens/{token_id}",
        operations={
            "delete": {
                "summary": "Revoke one of the caller's tokens (another user's token id is a 404)",
                "parameters": [token_id],
                "responses": {"200": _response("the revoked token", "Token"), "404": _NOT_FOUND},
            }
        },
    )


def _add_shared_responses(document: dict) -> None:
    """Open paths need no token; every other operation may answer 401, with a body 415, creating a job 429."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path in OPEN_PATHS:
                operation["security"] = []
                continue
            responses.setdefault("401", _UNAUTHORIZED)
            if "requestBody" in operation:
                responses.setdefault("415", _UNSUPPORTED)
            if (path, method) in JOB_CREATING:
                responses.setdefault("429", _TOO_MANY)


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    spec = APISpec(
        title="bertqueue",
        version="1.0.0",
        openapi_version="3.1.0",
        info={
            "description": "Train and serve BERT-family text classifiers through a job queue. Send "
            "`Authorization: Bearer <token>` (an admin creates users; each user makes their own tokens). "
            "JSON bodies must be `application/json`."
        },
        security=[{SECURITY_SCHEME: []}],
    )
    spec.components.security_scheme(
        SECURITY_SCHEME,
        {"type": "http", "scheme": "bearer", "description": "an API token (POST /api/v1/tokens, or the admin's)"},
    )
    pairs = [(m, "validation") for m in REQUEST_MODELS] + [(m, "serialization") for m in RESPONSE_MODELS]
    _, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    for name, schema in top.get("$defs", {}).items():
        spec.components.schema(name, schema)
    _paths(spec)
    document = spec.to_dict()
    _add_shared_responses(document)
    return document
