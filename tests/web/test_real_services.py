"""The web against the real servers: Redis as broker, PostgreSQL as database (skipped without them, except CI)."""
from __future__ import annotations

import base64
import io
import json

import pytest
from sqlalchemy import inspect

from core.db import db
from core.queue import TRAIN_QUEUE, enqueue_job
from core.results import insert_predictions
from tests.factories import api_client, migrate

from . import factories as f
from .helpers import assert_error

TEST_REDIS_DB = 13  # a database of its own on the shared server, so no worker consumes these messages


def _db_url(redis_url: str, number: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{number}"


@pytest.mark.redis
def test_readyz_with_a_real_broker(settings, redis_url):
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(redis_url=redis_url, celery_eager=False)})
    response = app.test_client().get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.redis
def test_the_message_is_sent_by_task_name_and_carries_only_the_job_id(settings, redis_url, monkeypatch):
    import redis

    from web import create_app

    monkeypatch.setattr("web.services.enqueue_job", enqueue_job)  # the real send, not the recording fake
    url = _db_url(redis_url, TEST_REDIS_DB)
    app = create_app({"TESTING": True, "SETTINGS": settings.replace(redis_url=url, celery_eager=False)})
    broker = redis.Redis.from_url(url)
    dataset_id = f.make_dataset()
    response = api_client(app).post(
        "/api/v1/jobs/train", json={"dataset_id": dataset_id, "text_column": "text", "label_column": "label"}
    )
    assert response.status_code == 202
    job_id = response.json["id"]
    try:
        mine = []
        for raw in broker.lrange(TRAIN_QUEUE, 0, -1):
            message = json.loads(raw)
            body = json.loads(base64.b64decode(message["body"]))
            if body[0] == [job_id]:
                mine.append(raw)
                assert message["headers"]["task"] == "bertqueue.train"
                assert message["content-type"] == "application/json"
                assert body[1] == {}  # no kwargs: the job id is the whole payload
        assert len(mine) == 1, "exactly one message for the job"
    finally:
        for raw in broker.lrange(TRAIN_QUEUE, 0, -1):
            if job_id.encode() in base64.b64decode(json.loads(raw)["body"]):
                broker.lrem(TRAIN_QUEUE, 0, raw)
        broker.close()


@pytest.mark.postgres
def test_api_on_postgresql(settings, postgres_schema_url, sent):
    from web import create_app

    migrate(postgres_schema_url)  # the schema as production builds it: Alembic, not create_all
    app = create_app({"TESTING": True, "SETTINGS": settings.replace(database_url=postgres_schema_url),
                      "WTF_CSRF_ENABLED": False})
    assert db.engine.dialect.name == "postgresql"
    assert "alembic_version" in inspect(db.engine).get_table_names()
    client = api_client(app)
    upload = client.post("/api/v1/datasets", data={"file": (io.BytesIO(f.CSV), "r.csv")},
                         content_type="multipart/form-data")
    assert upload.status_code == 201, upload.json
    body = {"dataset_id": upload.json["id"], "text_column": "text", "label_column": "label"}
    train = client.post("/api/v1/jobs/train", json=body).json
    assert_error(client.post("/api/v1/jobs/train", json={**body, "label_column": "nope"}), 422, "unknown_column")
    model_id = f.make_model()
    texts = ["a", "b", "c"]
    classify = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": texts}).json
    f.start(classify["id"])
    items = [{"index": i, "text": texts[i], "label": "pos" if i % 2 == 0 else "neg", "score": 0.8,
              "scores": {"pos": 0.8, "neg": 0.2} if i % 2 == 0 else {"pos": 0.2, "neg": 0.8}} for i in range(3)]
    with db.session() as session:  # a first attempt stored indices 2 and 0 ...
        insert_predictions(session, classify["id"], [items[2], items[0]])
    with db.session() as session:  # ... the retry writes them all: ON CONFLICT DO NOTHING skips 0 and 2, no error
        insert_predictions(session, classify["id"], [{**item, "label": "retry"} for item in items])
    f.succeed(classify["id"])
    page = client.get(f"/api/v1/jobs/{classify['id']}/predictions?limit=2").json
    assert [p["index"] for p in page["items"]] == [0, 1] and page["total"] == 3
    everything = client.get(f"/api/v1/jobs/{classify['id']}/predictions").json["items"]
    assert [(p["index"], p["text"], p["label"]) for p in everything] == [(0, "a", "pos"), (1, "b", "retry"),
                                                                         (2, "c", "pos")]
    listing = client.get("/api/v1/jobs?type=train&status=queued").json
    assert [j["id"] for j in listing["items"]] == [train["id"]] and listing["total"] == 1
    assert client.get(f"/api/v1/jobs/{train['id']}").json["created_at"].endswith("+00:00")
    assert client.post(f"/api/v1/jobs/{train['id']}/cancel").json["status"] == "cancelled"
    assert 'bertqueue_jobs{status="cancelled",type="train"} 1.0' in client.get("/metrics").get_data(as_text=True)
    for path in ["/", "/jobs", f"/jobs/{classify['id']}", f"/datasets/{upload.json['id']}", "/train", "/models"]:
        assert client.get(path).status_code == 200, path
    assert client.get("/readyz").json["checks"]["database"] == "ok"
