"""Question answering against a real Celery worker process, the real Redis server and PostgreSQL (the
tests/integration/test_real_worker.py stack, issue 18): a 16-question JSON Lines upload trains a tiny extractive QA
model through the API on the worker, which then answers questions in a classify job whose stored predictions (each
answer a span of its context, ``answer == context[start:end]``, "no answer" where the question has none, the
``?label=`` filter on answered / no_answer) are read back from PostgreSQL, and evaluates it (SQuAD EM / F1)."""
from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import select

from core.db import db
from core.schema import Prediction

from tests.ml.test_qa_training import qa_examples

from .conftest import wait_for_job
from .test_real_worker import _client, _logs, _Stack

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# a database of its own on the shared server (the token test uses 9, the others 10 to 14), flushed by _Stack
REDIS_DB = 8


def _jsonl(examples: list[dict]) -> bytes:
    """One question a line, its gold answers as SQuAD's ``{"text": [...], "answer_start": [...]}`` (empty lists:
    unanswerable)."""
    return "".join(json.dumps({"question": e["question"], "context": e["context"],
                               "answers": {"text": [t for t, _ in e["answers"]],
                                           "answer_start": [s for _, s in e["answers"]]}}) + "\n"
                   for e in examples).encode()


@pytest.fixture
def stack(tmp_path, postgres_schema_url, redis_url):
    """A stack of its own for this test, on its own Redis database: ``(settings, start_worker, tmp_path)``."""
    stack = _Stack(postgres_schema_url, redis_url, tmp_path, redis_db=REDIS_DB)
    yield stack.settings, stack.start_worker, tmp_path
    stack.stop()
    db.dispose()


def test_qa_model_trains_answers_and_evaluates_on_a_real_worker(stack, tiny_encoders):
    settings, start_worker, tmp_path = stack
    start_worker()
    client = _client(settings)  # points this process at the stack's database
    examples = qa_examples()  # 16 questions about short contexts, every 4th unanswerable
    upload = client.post("/api/v1/datasets", data={"file": (io.BytesIO(_jsonl(examples)), "qa.jsonl")},
                         content_type="multipart/form-data")
    assert upload.status_code == 201, upload.get_json()
    dataset_id = upload.get_json()["id"]
    assert (upload.get_json()["format"], upload.get_json()["rows"]) == ("jsonl", 16)

    # max_length 20 cuts each context into two windows overlapping by 4 tokens
    response = client.post("/api/v1/jobs/train", json={
        "dataset_id": dataset_id, "task_type": "question-answering", "encoder": str(tiny_encoders["bert"]),
        "epochs": 40, "batch_size": 8, "max_length": 20, "doc_stride": 4, "learning_rate": 3e-3,
        "validation_split": 0.0, "dropout": 0.0, "seed": 0})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"], timeout=300)
    assert job["status"] == "succeeded", f"{job['error']}\n{_logs(tmp_path)}"
    assert job["task_type"] == "question-answering"
    model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
    assert model["task_type"] == "question-answering"

    asked = examples[:4]  # three answerable questions and an unanswerable one
    questions = [{"question": e["question"], "context": e["context"]} for e in asked]
    response = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "questions": questions})
    assert response.status_code == 202, response.get_json()
    classify = wait_for_job(client, response.get_json()["id"], timeout=120)
    assert classify["status"] == "succeeded", f"{classify['error']}\n{_logs(tmp_path)}"
    assert classify["task_type"] == "question-answering"

    # what the worker stored, read from PostgreSQL: the question, its context, the answer as a span of the context
    with db.session() as session:
        rows = session.scalars(select(Prediction).where(Prediction.job_id == classify["id"])
                               .order_by(Prediction.index)).all()
        stored = [(p.index, p.text, p.text_pair, p.result, p.label, p.score) for p in rows]
    assert [(i, q, c) for i, q, c, *_ in stored] == [(i, e["question"], e["context"]) for i, e in enumerate(asked)]
    for (_, question, context, result, label, score), example in zip(stored, asked, strict=True):
        gold = example["answers"][0][0] if example["answers"] else ""
        assert result["answer"] == gold and result["question"] == question, result
        assert result["answer"] == context[result["start"]:result["end"]], result
        if gold:
            assert result["start"] == example["answers"][0][1]
        assert label == ("answered" if gold else "no_answer")
        assert 0 < score <= 1 and score == pytest.approx(result["score"])

    # the API serves the same rows, and ?label= filters them by answered / no answer
    items = client.get(f"/api/v1/jobs/{classify['id']}/predictions").get_json()["items"]
    assert [(i["answer"], i["start"], i["end"]) for i in items] == \
        [(r[3]["answer"], r[3]["start"], r[3]["end"]) for r in stored]
    unanswered = client.get(f"/api/v1/jobs/{classify['id']}/predictions?label=no_answer").get_json()["items"]
    assert [i["index"] for i in unanswered] == [3]

    evaluation = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"], "dataset_id": dataset_id})
    assert evaluation.status_code == 202, evaluation.get_json()
    evaluated = wait_for_job(client, evaluation.get_json()["id"], timeout=120)
    assert evaluated["status"] == "succeeded", f"{evaluated['error']}\n{_logs(tmp_path)}"
    metrics = evaluated["metrics"]
    assert metrics["exact_match"] == 1.0 and metrics["f1"] == 1.0 and metrics["examples"] == 16
    assert metrics["has_answer_f1"] == 1.0 and metrics["no_answer_accuracy"] == 1.0
