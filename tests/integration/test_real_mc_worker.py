"""Multiple choice against a real Celery worker process, the real Redis server and PostgreSQL (the
tests/integration/test_real_worker.py stack, issue 18): a 16-row SWAG-style CSV upload (3 or 4 endings per row, labels
as positions or texts) trains a tiny multiple-choice model through the API on the worker, which then answers
choice_questions in a classify job whose stored predictions (the chosen position and choice, one probability per
choice, the ``?label=`` filter on positions) are read back from PostgreSQL, and evaluates it (accuracy)."""
from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import select

from core.db import db
from core.schema import Prediction

from tests.ml.test_mc_training import _examples, _gold, mc_rows

from .conftest import wait_for_job
from .test_real_worker import _client, _logs, _Stack

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# a database of its own on the shared server (QA uses 8, the token test 9, the others 10 to 14), flushed by _Stack
REDIS_DB = 7


def _csv(rows: list[dict[str, str]]) -> bytes:
    """SWAG's columns: context, question, ending0..ending3 (an empty ending3: a row of 3 choices), label."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@pytest.fixture
def stack(tmp_path, postgres_schema_url, redis_url):
    """A stack of its own for this test, on its own Redis database: ``(settings, start_worker, tmp_path)``."""
    stack = _Stack(postgres_schema_url, redis_url, tmp_path, redis_db=REDIS_DB)
    yield stack.settings, stack.start_worker, tmp_path
    stack.stop()
    db.dispose()


def test_mc_model_trains_answers_and_evaluates_on_a_real_worker(stack, tiny_encoders):
    settings, start_worker, tmp_path = stack
    start_worker()
    client = _client(settings)  # points this process at the stack's database
    rows = mc_rows()  # 16 rows: the context's animal runs home, the others sleep; odd rows have 3 choices
    upload = client.post("/api/v1/datasets", data={"file": (io.BytesIO(_csv(rows)), "swag.csv")},
                         content_type="multipart/form-data")
    assert upload.status_code == 201, upload.get_json()
    dataset_id = upload.get_json()["id"]
    assert (upload.get_json()["format"], upload.get_json()["rows"]) == ("csv", 16)

    response = client.post("/api/v1/jobs/train", json={
        "dataset_id": dataset_id, "task_type": "multiple-choice", "encoder": str(tiny_encoders["bert"]),
        "epochs": 15, "batch_size": 8, "max_length": 24, "learning_rate": 3e-3, "validation_split": 0.0,
        "dropout": 0.0, "seed": 0})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"], timeout=300)
    assert job["status"] == "succeeded", f"{job['error']}\n{_logs(tmp_path)}"
    assert job["task_type"] == "multiple-choice"
    model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
    assert model["task_type"] == "multiple-choice" and model["labels"] == ["0", "1", "2", "3"]

    examples, gold = _examples(rows), _gold(rows)
    asked = examples[:4]  # rows of 4 and of 3 choices, the right one at different positions
    questions = [{"context": e.context, "question": e.question, "choices": e.choices} for e in asked]
    response = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "choice_questions": questions})
    assert response.status_code == 202, response.get_json()
    classify = wait_for_job(client, response.get_json()["id"], timeout=120)
    assert classify["status"] == "succeeded", f"{classify['error']}\n{_logs(tmp_path)}"
    assert classify["task_type"] == "multiple-choice"

    # what the worker stored, read from PostgreSQL: the context and question, the chosen position and its choice
    with db.session() as session:
        stored = [(p.index, p.text, p.text_pair, p.result, p.label, p.score, p.scores) for p in session.scalars(
            select(Prediction).where(Prediction.job_id == classify["id"]).order_by(Prediction.index)).all()]
    assert [(i, c, q) for i, c, q, *_ in stored] == [(i, e.context, e.question) for i, e in enumerate(asked)]
    for (_, _, _, result, label, score, scores), example, right in zip(stored, asked, gold[:4], strict=True):
        assert result["choice_index"] == right and result["choice"] == example.choices[right], result
        assert result["choices"] == example.choices and len(result["scores"]) == len(example.choices)
        assert sum(result["scores"]) == pytest.approx(1.0, abs=1e-4)
        assert label == str(right) and score == pytest.approx(result["scores"][right])
        assert scores == {str(i): pytest.approx(s) for i, s in enumerate(result["scores"])}

    # the API serves the same rows, and ?label= filters them by the chosen position
    items = client.get(f"/api/v1/jobs/{classify['id']}/predictions").get_json()["items"]
    assert [(i["choice_index"], i["choice"], i["choices"]) for i in items] == \
        [(r[3]["choice_index"], r[3]["choice"], r[3]["choices"]) for r in stored]
    for position in {str(g) for g in gold[:4]}:
        picked = client.get(f"/api/v1/jobs/{classify['id']}/predictions?label={position}").get_json()["items"]
        assert [i["index"] for i in picked] == [i for i, g in enumerate(gold[:4]) if str(g) == position]

    evaluation = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"], "dataset_id": dataset_id})
    assert evaluation.status_code == 202, evaluation.get_json()
    evaluated = wait_for_job(client, evaluation.get_json()["id"], timeout=120)
    assert evaluated["status"] == "succeeded", f"{evaluated['error']}\n{_logs(tmp_path)}"
    metrics = evaluated["metrics"]
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0 and metrics["examples"] == 16
