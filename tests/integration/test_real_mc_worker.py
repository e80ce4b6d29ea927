"""Multiple choice against a real Celery worker process, the real Redis server and PostgreSQL (the
tests/integration/test_real_worker.py stack, issue 18): a 16-row SWAG-style CSV upload (3 or 4 endings per row, labels
as positions or texts) trains a tiny multiple-choice model through the API on the worker, which then answers
choice_questions in a classify job whose stored predictions (the chosen position and choice, one probability per
choice, the ``?label=`` filter on positions) are read back from PostgreSQL, and evaluates it (accuracy)."""
from __future__ import annotations

import pytest

from tests.ml.test_mc_training import _examples, _gold, mc_rows

from .api_steps import swag_csv
from .real_stack import real_run_fixture, stored_predictions

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# a database of its own on the shared server (QA uses 8, the token test 9, the others 10 to 14), flushed by _Stack
REDIS_DB = 7
run = real_run_fixture(REDIS_DB)


def test_mc_model_trains_answers_and_evaluates_on_a_real_worker(run, tiny_encoders):
    rows = mc_rows()  # 16 rows: the context's animal runs home, the others sleep; odd rows have 3 choices
    dataset_id = run.upload(swag_csv(rows), "swag.csv", "csv", 16)

    job = run.run_job("train", {
        "dataset_id": dataset_id, "task_type": "multiple-choice", "encoder": str(tiny_encoders["bert"]),
        "epochs": 15, "batch_size": 8, "max_length": 24, "learning_rate": 3e-3, "validation_split": 0.0,
        "dropout": 0.0, "seed": 0}, timeout=300, task_type="multiple-choice")
    model = run.model(job["model_id"])
    assert model["task_type"] == "multiple-choice" and model["labels"] == ["0", "1", "2", "3"]

    examples, gold = _examples(rows), _gold(rows)
    asked = examples[:4]  # rows of 4 and of 3 choices, the right one at different positions
    questions = [{"context": e.context, "question": e.question, "choices": e.choices} for e in asked]
    classify = run.run_job("classify", {"model_id": model["id"], "choice_questions": questions},
                           task_type="multiple-choice")

    # what the worker stored, read from PostgreSQL: the context and question, the chosen position and its choice
    stored = stored_predictions(classify["id"], "index", "text", "text_pair", "result", "label", "score", "scores")
    assert [(i, c, q) for i, c, q, *_ in stored] == [(i, e.context, e.question) for i, e in enumerate(asked)]
    for (_, _, _, result, label, score, scores), example, right in zip(stored, asked, gold[:4], strict=True):
        assert result["choice_index"] == right and result["choice"] == example.choices[right], result
        assert result["choices"] == example.choices and len(result["scores"]) == len(example.choices)
        assert sum(result["scores"]) == pytest.approx(1.0, abs=1e-4)
        assert label == str(right) and score == pytest.approx(result["scores"][right])
        assert scores == {str(i): pytest.approx(s) for i, s in enumerate(result["scores"])}

    # the API serves the same rows, and ?label= filters them by the chosen position
    items = run.predictions(classify["id"])
    assert [(i["choice_index"], i["choice"], i["choices"]) for i in items] == \
        [(r[3]["choice_index"], r[3]["choice"], r[3]["choices"]) for r in stored]
    for position in {str(g) for g in gold[:4]}:
        picked = run.predictions(classify["id"], f"?label={position}")
        assert [i["index"] for i in picked] == [i for i, g in enumerate(gold[:4]) if str(g) == position]

    evaluated = run.run_job("evaluate", {"model_id": model["id"], "dataset_id": dataset_id})
    metrics = evaluated["metrics"]
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0 and metrics["examples"] == 16
