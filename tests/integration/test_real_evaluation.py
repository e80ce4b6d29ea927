"""Evaluation jobs against a real Celery worker process, the real Redis server and PostgreSQL (the
tests/integration/test_real_worker.py stack): the job is routed to the classify queue, scored by the worker, and
re-sent by the reconciler when its message is lost."""
from __future__ import annotations

import csv
import io
import random

import pytest
from sklearn.metrics import confusion_matrix
from sqlalchemy import update

from core import jobs
from core.db import db
from core.evaluation import plan_evaluation
from core.queue import QUEUE_FOR_TASK, RECONCILE_TASK, make_celery
from core.schema import Job, JobType, utcnow
from tests.factories import save_tiny_model, tiny_model_row

from .conftest import upload, wait_for_job
from .test_real_worker import _client, _logs, _Stack

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

LABELS = ["neg", "pos"]
REDIS_DB = 11  # a database of its own on the shared server (test_real_worker uses 10 and 12)


@pytest.fixture(scope="module")
def stack(tiny_bert_dir, tokenizer, tmp_path_factory):
    """One stack with one worker consuming every queue; yields ``(stack, client, model_id)``."""
    from tests.conftest import REDIS_URL, _redis_error, postgres_schema, require_service

    require_service("Redis", _redis_error())
    model_dir = save_tiny_model("bert", {"sentiment": LABELS}, tiny_bert_dir, tokenizer,
                                tmp_path_factory.mktemp("real-evaluation") / "model", seed=11)
    with postgres_schema() as url:
        stack = _Stack(url, REDIS_URL, tmp_path_factory.mktemp("evaluation-worker"), redis_db=REDIS_DB)
        try:
            client = _client(stack.settings)  # points this process at the stack's database
            model_id = tiny_model_row(model_dir, LABELS)
            stack.start_worker()
            yield stack, client, model_id
        finally:
            stack.stop()
            db.dispose()


def _dataset(client, n: int = 60) -> tuple[int, list[dict]]:
    rng = random.Random(5)
    words = ["great", "awful", "gate", "lost", "thanks", "delay", "crew", "seat"]
    rows = [{"text": " ".join(rng.choices(words, k=4)) + f" {i}", "gold": rng.choice(LABELS)} for i in range(n)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "gold"])
    writer.writeheader()
    writer.writerows(rows)
    return upload(client, out.getvalue().encode(), "gold"), rows


def test_evaluation_runs_on_the_real_worker(stack):
    stack, client, model_id = stack
    dataset_id, rows = _dataset(client)
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id,
                                                          "text_column": "text", "label_column": "gold"})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"], timeout=120)
    assert job["status"] == "succeeded", f"{job}\n{_logs(stack.directory)}"
    metrics = job["metrics"]
    assert metrics["examples"] == len(rows) == sum(map(sum, metrics["confusion_matrix"]["matrix"]))

    predict = client.post("/api/v1/predict", json={"model_id": model_id, "texts": [r["text"] for r in rows],
                                                   "timeout_s": 60})
    assert predict.status_code == 200, predict.get_json()
    predicted = [p["label"] for p in predict.get_json()["predictions"]]
    expected = confusion_matrix([r["gold"] for r in rows], predicted, labels=LABELS).tolist()
    assert metrics["confusion_matrix"] == {"labels": LABELS, "matrix": expected}


def test_reconciler_resends_a_lost_evaluation(stack):
    stack, client, model_id = stack
    dataset_id, rows = _dataset(client, 20)
    with db.session() as session:  # committed, its message "sent" long ago and lost
        plan = plan_evaluation("bert", {"sentiment": LABELS}, {}, text_column="text", label_column="gold")
        job_id = jobs.create_job(session, JobType.EVALUATE, {"model_id": model_id, "dataset_id": dataset_id,
                                                              **plan.to_params()},
                                 model_id=model_id, dataset_id=dataset_id).id
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow().replace(year=2000)))
    make_celery(stack.settings).send_task(RECONCILE_TASK, queue=QUEUE_FOR_TASK[RECONCILE_TASK])
    job = wait_for_job(client, job_id, timeout=120)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), f"{job}\n{_logs(stack.directory)}"
    assert job["metrics"]["examples"] == len(rows)
