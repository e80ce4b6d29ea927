"""Token classification against a real Celery worker process, the real Redis server and PostgreSQL (the
tests/integration/test_real_worker.py stack, issue 17): a 16-sentence CoNLL upload trains a tiny entity recogniser
through the API on the worker, which then tags raw texts in a classify job whose stored predictions (entities with
character offsets, the entity types a ``?label=`` filter matches through PostgreSQL's jsonb) are checked, and
evaluates it."""
from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from core.db import db
from core.schema import Prediction

from .conftest import wait_for_job
from .test_real_worker import _client, _logs, _Stack

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

REDIS_DB = 9  # a database of its own on the shared server (the other real tests use 10 to 14), flushed by _Stack
NAMES, PLACES = ["Alice", "Bob", "Carol", "Dave"], ["Paris", "Berlin", "Lagos", "Lima"]


def _conll() -> bytes:
    """16 sentences ``<name> Smith flew to <place>``: every name and place seen, in every pairing of four."""
    lines = []
    for i in range(16):
        name, place = NAMES[i % 4], PLACES[(i // 4) % 4]
        words = [(name, "B-person"), ("Smith", "I-person"), ("flew", "O"), ("to", "O"), (place, "B-location")]
        lines += [f"{w}\t{t}" for w, t in words] + [""]
    return "\n".join(lines).encode()


@pytest.fixture
def stack(tmp_path, postgres_schema_url, redis_url):
    """A stack of its own for this test, on its own Redis database: ``(settings, start_worker, tmp_path)``."""
    stack = _Stack(postgres_schema_url, redis_url, tmp_path, redis_db=REDIS_DB)
    yield stack.settings, stack.start_worker, tmp_path
    stack.stop()
    db.dispose()


def test_token_model_trains_tags_and_evaluates_on_a_real_worker(stack, tiny_encoders):
    settings, start_worker, tmp_path = stack
    start_worker()
    client = _client(settings)  # points this process at the stack's database
    upload = client.post("/api/v1/datasets", data={"file": (io.BytesIO(_conll()), "ner.conll")},
                         content_type="multipart/form-data")
    assert upload.status_code == 201, upload.get_json()
    dataset_id = upload.get_json()["id"]
    assert (upload.get_json()["format"], upload.get_json()["rows"]) == ("conll", 16)

    response = client.post("/api/v1/jobs/train", json={
        "dataset_id": dataset_id, "task_type": "token-classification", "encoder": str(tiny_encoders["bert"]),
        "epochs": 40, "batch_size": 8, "max_length": 16, "stride": 4, "learning_rate": 3e-3,
        "validation_split": 0.0, "dropout": 0.0, "seed": 1})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"], timeout=300)
    assert job["status"] == "succeeded", f"{job['error']}\n{_logs(tmp_path)}"
    assert job["task_type"] == "token-classification"
    model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
    assert model["task_type"] == "token-classification"
    assert set(model["labels"]) == {"O", "B-person", "I-person", "B-location"}

    texts = ["Carol Smith flew to Lima", "Dave Smith flew to Paris"]
    response = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "texts": texts})
    assert response.status_code == 202, response.get_json()
    classify = wait_for_job(client, response.get_json()["id"], timeout=120)
    assert classify["status"] == "succeeded", f"{classify['error']}\n{_logs(tmp_path)}"
    assert classify["task_type"] == "token-classification"

    # what the worker stored, read from PostgreSQL: the entities (offsets into each text) and the types found
    with db.session() as session:
        rows = session.scalars(select(Prediction).where(Prediction.job_id == classify["id"])
                               .order_by(Prediction.index)).all()
        stored = [(p.index, p.text, p.result, p.labels, p.label) for p in rows]
    assert [(i, text) for i, text, *_ in stored] == list(enumerate(texts))
    for (_, text, result, labels, label), (name, place) in zip(stored, [("Carol Smith", "Lima"),
                                                                         ("Dave Smith", "Paris")], strict=True):
        entities = result["entities"]
        assert [(e["entity_group"], e["word"]) for e in entities] == [("person", name), ("location", place)]
        assert all(text[e["start"]:e["end"]] == e["word"] and 0 < e["score"] <= 1 for e in entities)
        assert labels == ["location", "person"] and label == "location"

    # the API serves the same rows, and ?label= filters them by entity type (jsonb containment)
    items = client.get(f"/api/v1/jobs/{classify['id']}/predictions").get_json()["items"]
    assert [i["entities"] for i in items] == [r[2]["entities"] for r in stored]
    persons = client.get(f"/api/v1/jobs/{classify['id']}/predictions?label=person").get_json()["items"]
    assert [i["index"] for i in persons] == [0, 1]

    evaluation = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"], "dataset_id": dataset_id})
    assert evaluation.status_code == 202, evaluation.get_json()
    evaluated = wait_for_job(client, evaluation.get_json()["id"], timeout=120)
    assert evaluated["status"] == "succeeded", f"{evaluated['error']}\n{_logs(tmp_path)}"
    assert evaluated["metrics"]["f1"] == 1.0 and evaluated["metrics"]["examples"] == 16
    assert set(evaluated["metrics"]["per_type"]) == {"person", "location"}
