"""Question answering against a real Celery worker process, the real Redis server and PostgreSQL (the
tests/integration/test_real_worker.py stack, issue 18): a 16-question JSON Lines upload trains a tiny extractive QA
model through the API on the worker, which then answers questions in a classify job whose stored predictions (each
answer a span of its context, ``answer == context[start:end]``, "no answer" where the question has none, the
``?label=`` filter on answered / no_answer) are read back from PostgreSQL, and evaluates it (SQuAD EM / F1)."""
from __future__ import annotations

import pytest

from tests.ml.test_qa_training import qa_examples

from .api_steps import qa_jsonl
from .real_stack import real_run_fixture, stored_predictions

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# a database of its own on the shared server (the token test uses 9, the others 10 to 14), flushed by _Stack
REDIS_DB = 8
run = real_run_fixture(REDIS_DB)


def test_qa_model_trains_answers_and_evaluates_on_a_real_worker(run, tiny_encoders):
    examples = qa_examples()  # 16 questions about short contexts, every 4th unanswerable
    dataset_id = run.upload(qa_jsonl(examples), "qa.jsonl", "jsonl", 16)

    # max_length 20 cuts each context into two windows overlapping by 4 tokens
    job = run.run_job("train", {
        "dataset_id": dataset_id, "task_type": "question-answering", "encoder": str(tiny_encoders["bert"]),
        "epochs": 40, "batch_size": 8, "max_length": 20, "doc_stride": 4, "learning_rate": 3e-3,
        "validation_split": 0.0, "dropout": 0.0, "seed": 0}, timeout=300, task_type="question-answering")
    model = run.model(job["model_id"])
    assert model["task_type"] == "question-answering"

    asked = examples[:4]  # three answerable questions and an unanswerable one
    questions = [{"question": e["question"], "context": e["context"]} for e in asked]
    classify = run.run_job("classify", {"model_id": model["id"], "questions": questions},
                           task_type="question-answering")

    # what the worker stored, read from PostgreSQL: the question, its context, the answer as a span of the context
    stored = stored_predictions(classify["id"], "index", "text", "text_pair", "result", "label", "score")
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
    items = run.predictions(classify["id"])
    assert [(i["answer"], i["start"], i["end"]) for i in items] == \
        [(r[3]["answer"], r[3]["start"], r[3]["end"]) for r in stored]
    unanswered = run.predictions(classify["id"], "?label=no_answer")
    assert [i["index"] for i in unanswered] == [3]

    evaluated = run.run_job("evaluate", {"model_id": model["id"], "dataset_id": dataset_id})
    metrics = evaluated["metrics"]
    assert metrics["exact_match"] == 1.0 and metrics["f1"] == 1.0 and metrics["examples"] == 16
    assert metrics["has_answer_f1"] == 1.0 and metrics["no_answer_accuracy"] == 1.0
