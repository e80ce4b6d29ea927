"""Malformed requests get a clear 4xx with the error shape, and nothing is written."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from core.db import db
from core.schema import Job

from .factories import make_dataset, make_model
from .helpers import assert_error
from tests.factories import api_client

JSON_POSTS = ["/api/v1/jobs/train", "/api/v1/jobs/classify", "/api/v1/predict"]


def job_count() -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


@pytest.mark.parametrize("path", JSON_POSTS)
@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "must be an object"),
        (b'"text"', "must be an object"),
        (b"null", "must be an object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_json_is_400(client, sent, path, body, fragment):
    response = client.post(path, data=body, content_type="application/json")
    error = assert_error(response, 400, "invalid_json")
    assert fragment in error["message"]
    assert job_count() == 0 and sent == []


TRAIN_BODY = '{"dataset_id": %d, "text_column": "text", "label_column": "label"}'


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json"])
def test_json_bodies_need_the_json_media_type(client, sent, content_type):
    """A cross-site HTML form can send only text/plain, urlencoded or multipart bodies: none may drive the API."""
    body = TRAIN_BODY % make_dataset()
    headers = {} if content_type is None else {"Content-Type": content_type}
    error = assert_error(client.post("/api/v1/jobs/train", data=body, headers=headers), 415, "unsupported_media_type")
    assert "application/json" in error["message"]
    assert job_count() == 0 and sent == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_media_type_with_parameters_is_accepted(client, sent, content_type):
    response = client.post("/api/v1/jobs/train", data=TRAIN_BODY % make_dataset(), headers={"Content-Type": content_type})
    assert response.status_code == 202, response.json
    assert job_count() == 1 and len(sent) == 1


def test_bodyless_post_needs_no_content_type(client):
    job_id = client.post("/api/v1/jobs/train", json=json.loads(TRAIN_BODY % make_dataset())).json["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json["status"] == "cancelled"


@pytest.mark.parametrize("content_type", ["application/json", "text/csv", None])
def test_dataset_upload_needs_multipart(client, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/api/v1/datasets", data=b"text,label\na,b\nc,d\n", headers=headers)
    assert_error(response, 415, "unsupported_media_type")
    assert client.get("/api/v1/datasets").json["total"] == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"text_column": "text", "label_column": "label"}, "dataset_id"),
        ({"dataset_id": "one", "text_column": "text", "label_column": "label"}, "dataset_id"),
        ({"dataset_id": 1, "text_column": 5, "label_column": "label"}, "text_column"),
        ({"dataset_id": 1, "text_column": "text", "label_column": "label", "colour": "red"}, "colour"),
        ({"dataset_id": 1, "text_column": "text", "label_column": "label", "epochs": 0}, "epochs"),
        ({"dataset_id": 1, "text_column": "text", "label_column": "label", "family": "gpt"}, "family"),
        ({"dataset_id": 1, "text_column": "text", "label_column": "label", "learning_rate": "fast"}, "learning_rate"),
    ],
)
def test_train_body_validation(client, sent, body, field):
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 422, "validation_error")
    assert field in error["message"]
    assert any(d["field"] == field for d in error["details"]), error["details"]
    assert job_count() == 0 and sent == []


def test_train_needs_a_label_column(client):
    error = assert_error(
        client.post("/api/v1/jobs/train", json={"dataset_id": 1, "text_column": "text"}), 422, "validation_error"
    )
    assert "label_column" in error["message"]


@pytest.mark.parametrize("path", ["/api/v1/jobs/classify", "/api/v1/predict"])
@pytest.mark.parametrize(
    "body, field",
    [
        ({"texts": ["a"]}, "model_id"),
        ({"model_id": 1}, "texts"),
        ({"model_id": 1, "texts": "just one string"}, "texts"),
        ({"model_id": 1, "texts": []}, "texts"),
        ({"model_id": 1, "texts": ["ok", "  "]}, "texts"),
        ({"model_id": 1, "texts": ["ok", 3]}, "texts.1"),
        ({"model_id": [1], "texts": ["a"]}, "model_id"),
        ({"model_id": 1, "texts": ["a"], "threshold": 0.5}, "threshold"),
    ],
)
def test_classify_body_validation(client, sent, path, body, field):
    error = assert_error(client.post(path, json=body), 422, "validation_error")
    assert any(d["field"] == field for d in error["details"]), error["details"]
    assert job_count() == 0 and sent == []


def test_predict_timeout_validation(client):
    error = assert_error(
        client.post("/api/v1/predict", json={"model_id": 1, "texts": ["a"], "timeout_s": -1}), 422, "validation_error"
    )
    assert error["details"][0]["field"] == "timeout_s"


def test_classify_limits_come_from_settings(settings):
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_texts_per_job=2, max_text_chars=10)})
    client = api_client(app)
    model_id = make_model()
    error = assert_error(
        client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": ["a", "b", "c"]}), 422
    )
    assert "at most 2 texts" in error["message"]
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": ["x" * 11]}), 422)
    assert "limit is 10" in error["message"]
    assert client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": ["a", "b"]}).status_code == 202


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/v1/jobs/no-such-job"),
        ("post", "/api/v1/jobs/no-such-job/cancel"),
        ("get", "/api/v1/jobs/no-such-job/predictions"),
        ("get", "/api/v1/models/999"),
        ("get", "/api/v1/datasets/999"),
        ("get", "/api/v1/datasets/not-a-number"),
        ("get", "/api/v1/no-such-endpoint"),
    ],
)
def test_unknown_ids_are_404(client, method, path):
    assert_error(getattr(client, method)(path), 404, "not_found")


def test_unknown_model_and_dataset_in_bodies_are_404(client, sent):
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": 42, "texts": ["a"]}), 404)
    assert "model 42" in error["message"]
    assert_error(client.post("/api/v1/predict", json={"model_id": 42, "texts": ["a"]}), 404)
    body = {"dataset_id": 42, "text_column": "text", "label_column": "label"}
    assert "dataset 42" in assert_error(client.post("/api/v1/jobs/train", json=body), 404)["message"]
    assert job_count() == 0 and sent == []


def test_wrong_method_is_405_json(client):
    response = client.delete("/api/v1/jobs")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]
    # /api/v1/jobs/train is the train route's resource, not a job named "train" (GET /api/v1/jobs/<id>)
    wrong = client.get("/api/v1/jobs/train")
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "OPTIONS, POST" == client.options("/api/v1/jobs/train").headers["Allow"]


@pytest.mark.parametrize(
    "query",
    ["status=done", "type=predict", "limit=0", "limit=abc", "limit=100000", "offset=-1", "offset=x", "model_id=abc"],
)
def test_bad_list_parameters_are_400(client, query):
    error = assert_error(client.get(f"/api/v1/jobs?{query}"), 400, "invalid_parameter")
    assert query.split("=")[0] in error["message"]


def test_unexpected_errors_are_500_json(app, client, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr("web.services.list_jobs", boom)
    error = assert_error(client.get("/api/v1/jobs"), 500, "internal_error")
    assert "fire" not in error["message"]  # internals are logged, not leaked
    response = client.get("/jobs")
    assert response.status_code == 500 and b"internal server error" in response.data


def test_many_errors_are_capped(client):
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": 1, "texts": [1] * 500}), 422)
    assert len(error["details"]) == 20 and "(and 495 more)" in error["message"]
