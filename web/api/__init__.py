"""The JSON API (``/api/v1/...``) plus the health, readiness, metrics and OpenAPI endpoints.

Conventions (the OpenAPI document at ``/api/v1/openapi.json`` has the details):

- Authentication: ``Authorization: Bearer <token>`` on every route but ``/healthz``, ``/readyz`` and the OpenAPI
  document (401 ``unauthorized`` otherwise; ``/metrics``: admins, 403 ``forbidden`` for others, unless
  ``METRICS_PUBLIC``). Someone else's dataset, job or model answers 404 ``not_found``, exactly like a missing one.
  429 ``too_many_active_jobs`` past ``MAX_ACTIVE_JOBS_PER_USER`` queued + running jobs. Storage quotas
  (``core.quotas``: datasets, models, predictions per user): 413 (bytes) / 429 (counts) ``quota_exceeded`` with
  ``quota``, ``usage``, ``limit``, ``requested``; ``GET /api/v1/account`` shows the usage.
- Errors: ``{"error": {"code", "message"[, "details"]}}``. 415 ``unsupported_media_type`` (a body that is not
  ``application/json``, or an upload that is not ``multipart/form-data``), 400 ``invalid_json`` (unparsable, empty
  or non-object body, NaN/Infinity, nesting deeper than 32, lone surrogates), 400 ``invalid_parameter`` (query
  string: a value its query model in ``web.queries`` does not admit, e.g. an empty value outside an enum, a
  parameter given twice, a NUL character), 422 ``validation_error`` (body fails the pydantic spec, strictly: no
  coercion; ``details`` lists ``{field, message, type}``), 404 ``not_found``, 409 ``invalid_transition`` (cancelling a
  finished job), 413 ``payload_too_large``; dataset problems use ``core.datasets`` codes (``invalid_csv`` (CSV
  and TSV), ``invalid_jsonl``, ``invalid_encoding``, ``empty_file``, ``invalid_column_name``: 400;
  ``too_many_rows``, ``too_many_columns``: 413; ``unknown_column``, ``too_few_classes``, ``too_many_labels``: 422).
- Models (``core.models_registry``, ``web.model_files``): classify, evaluate and predict take ``model_id`` or
  ``model`` (``NAME``: the latest live version, or ``NAME:VERSION``); a deleted model is 409 ``model_deleted``
  there and on a second ``DELETE``; ``DELETE /api/v1/models/<id>`` while a queued or running job uses the model is
  409 ``model_in_use`` (``job_ids`` lists the caller's). ``GET .../download`` of a deleted model is 410
  ``model_deleted``, of one whose files are gone 410 ``model_files_missing``. ``POST /api/v1/models/import``:
  413 ``payload_too_large`` (past ``MAX_MODEL_UPLOAD_MB``) or ``archive_too_large`` (a zip bomb, or unzipping past
  ``MAX_MODEL_EXTRACTED_MB``), 400 ``invalid_archive``, 422 ``pickle_weights_refused``, ``unsafe_archive``,
  ``incomplete_checkpoint``, ``sharded_checkpoint``, ``unsupported_architecture``, ``invalid_checkpoint``,
  ``invalid_weights``, ``unsupported_tokenizer``, ``model_too_large`` (``MAX_MODEL_*`` caps); 507
  ``insufficient_storage`` (no room on the model store's disk); 409 ``version_conflict`` when concurrent writers kept taking the name's next version.
- ``GET /api/v1/jobs/<id>/predictions`` on a *train* job is 409 ``not_a_classify_job``; on a classify job that
  is still running it returns the predictions stored so far (``job_status`` and ``text_count`` tell how far).
- ``POST /api/v1/predict``: 200 when the job succeeded within ``timeout_s``, 500 ``job_failed`` (the job's
  error as message, plus ``job_id``) when it failed, 409 ``job_cancelled``, else 202 with the job.
- Lists are ``{"items", "total", "limit", "offset"}``, newest first.

How a route is documented (the OpenAPI document is generated, never written beside the routes): put
``@documented(...)`` (``apidoc``) under the route decorator, naming the route's summary, its JSON ``body`` model
(``core.specs``), multipart ``form`` model or ``query`` model (``web.queries``) and its ``responses`` (status ->
response model from ``web.schemas``, an ``Answer``, or the description of an error). The decorator validates the
body (strictly: no coercion), form and query string and passes them to the view as ``body=``, ``form=``,
``query=``; ``web.openapi`` walks ``app.url_map`` and builds each operation from the same declaration, adding the
shared answers (401; 415 on writes; 429 with ``creates_job=True``; 400/422 for a body or query, 404 for a path id)
and the open paths' ``security: []``. tests/web/test_openapi.py fails for a route left undocumented.
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__)

from . import (  # noqa: E402,F401  (routes register on import)
    accounts, datasets, docs, evaluations, health, jobs, model_files, models, predict,
)
