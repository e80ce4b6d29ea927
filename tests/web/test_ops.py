"""Health, readiness, OpenAPI and metrics endpoints."""
from __future__ import annotations

import socket

from web import schemas

from . import factories as f


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_in_eager_mode_checks_the_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    schemas.Health.model_validate(response.json)
    assert response.json["checks"]["database"] == "ok"
    assert response.json["checks"]["broker"].startswith("skipped")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readyz_is_503_when_the_broker_is_unreachable(settings):
    from web import create_app

    broken = settings.replace(redis_url=f"redis://127.0.0.1:{closed_port()}/0", celery_eager=False)
    response = create_app({"TESTING": True, "SETTINGS": broken}).test_client().get("/readyz")
    assert response.status_code == 503
    body = response.json
    assert body["status"] == "unavailable" and body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")
    assert body["error"]["code"] == "unavailable" and "broker" in body["error"]["message"]


def test_readyz_is_503_when_the_database_is_unreachable(client, monkeypatch):
    from core.db import db

    class Broken:
        def connect(self):
            raise OSError("connection refused")

    monkeypatch.setattr(type(db), "engine", property(lambda self: Broken()))
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["checks"]["database"].startswith("error")


def test_readyz_answers_no_error_text_and_logs_it(settings, monkeypatch, caplog):
    """An anonymous probe must not learn user names, hosts or ports from the failure: they go to the log."""
    from core.db import db
    from web import create_app

    class Broken:
        def connect(self):
            raise OSError('password authentication failed for user "bq_secret_user" at db.internal:5433')

    port = closed_port()
    broken = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0", celery_eager=False)
    app = create_app({"TESTING": True, "SETTINGS": broken})
    monkeypatch.setattr(type(db), "engine", property(lambda self: Broken()))
    with caplog.at_level("WARNING", logger="web.api.health"):
        response = app.test_client().get("/readyz")
    assert response.status_code == 503
    text = response.get_data(as_text=True)
    assert "bq_secret_user" not in text and "db.internal" not in text and str(port) not in text
    assert response.json["checks"] == {"database": "error: unreachable", "broker": "error: unreachable"}
    assert "bq_secret_user" in caplog.text and str(port) in caplog.text


def _refs(node, found):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.add(node["$ref"])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)
    return found


def test_openapi_document(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "bertqueue"
    expected = {
        "/api/v1/datasets": {"get", "post"},
        "/api/v1/datasets/{dataset_id}": {"get"},
        "/api/v1/jobs/train": {"post"},
        "/api/v1/jobs/classify": {"post"},
        "/api/v1/jobs": {"get"},
        "/api/v1/jobs/{job_id}": {"get"},
        "/api/v1/jobs/{job_id}/cancel": {"post"},
        "/api/v1/jobs/{job_id}/predictions": {"get"},
        "/api/v1/jobs/{job_id}/export": {"get"},
        "/api/v1/models": {"get"},
        "/api/v1/models/{model_id}": {"get"},
        "/api/v1/predict": {"post"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(doc["paths"][path]), path
        for method in methods:
            operation = doc["paths"][path][method]
            assert operation["responses"] and operation["summary"]
    schemas_ = doc["components"]["schemas"]
    assert {"TrainRequest", "ClassifyRequest", "PredictRequest", "Job", "Error", "PredictionPage"} <= set(schemas_)
    assert "dataset_id" in schemas_["TrainRequest"]["required"]
    assert schemas_["TrainRequest"]["additionalProperties"] is False
    classify = schemas_["ClassifyRequest"]
    assert {"model_id", "model", "texts", "dataset_id", "text_column", "id_column"} <= set(classify["properties"])
    # the model is named by model_id or by model (NAME or NAME:VERSION): neither alone is required
    assert "required" not in classify and classify["additionalProperties"] is False
    assert "id" in schemas_["Prediction"]["properties"]
    export = doc["paths"]["/api/v1/jobs/{job_id}/export"]["get"]
    assert {p["name"]: p["schema"].get("enum") for p in export["parameters"]} == {"job_id": None,
                                                                                  "format": ["csv", "jsonl", "conll"]}
    assert set(export["responses"]) == {"200", "400", "401", "404", "409"}
    assert set(export["responses"]["200"]["content"]) == {"text/csv; charset=utf-8", "application/x-ndjson",
                                                          "text/plain; charset=utf-8"}
    predictions = doc["paths"]["/api/v1/jobs/{job_id}/predictions"]["get"]
    assert "label" in {p["name"] for p in predictions["parameters"]}
    body = doc["paths"]["/api/v1/jobs/train"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TrainRequest"}
    for ref in _refs(doc, set()):  # every reference resolves
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas_, ref
    # every path parameter is declared
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


def test_metrics(client):
    dataset_id = f.make_dataset()
    f.make_train_job(dataset_id)
    done = f.make_train_job(dataset_id)
    f.start(done)
    f.succeed(done)
    client.get("/api/v1/jobs")
    client.get("/api/v1/jobs/nope")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert 'bertqueue_http_requests_total{method="GET",route="/api/v1/jobs",status="200"} 1.0' in text
    assert 'bertqueue_http_requests_total{method="GET",route="/api/v1/jobs/<job_id>",status="404"} 1.0' in text
    assert "bertqueue_http_request_duration_seconds_bucket" in text
    assert 'bertqueue_jobs{status="queued",type="train"} 1.0' in text
    assert 'bertqueue_jobs{status="succeeded",type="train"} 1.0' in text
    assert 'bertqueue_jobs{status="running",type="classify"} 0.0' in text
    assert "bertqueue_datasets 1.0" in text and "bertqueue_sql_up 1.0" in text
