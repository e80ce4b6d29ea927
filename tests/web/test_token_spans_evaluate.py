"""Evaluating a token model trained on span data (issue 17): its page offers datasets of texts (spans), not token
datasets, and names the text and spans columns; the API queues a span plan on a span dataset and refuses a token
dataset (422 dataset_task_mismatch) or entity types the model does not know, before any job row exists."""
from __future__ import annotations

import json

from core.db import db
from core.schema import Job
from core.task_types import get

from . import factories as f
from .helpers import assert_error
from .test_token_evaluate import CONLL, _jobs, _options, _upload

SPAN_PARAMS = {"task_type": "token-classification", "family": "bert", "text_column": "text",
               "spans_column": "entities", "label_column": "entities", "label_columns": ["entities"]}
SPAN_TAGS = ["O", "B-location", "I-location", "B-person", "I-person"]
SPANS_JSONL = "\n".join(json.dumps(row) for row in [
    {"text": "Bob lives in Paris", "entities": [{"start": 0, "end": 3, "label": "person"},
                                                {"start": 13, "end": 18, "label": "location"}]},
    {"text": "Ann left", "entities": [{"start": 0, "end": 3, "label": "person"}]},
]).encode()


def span_model() -> int:
    return f.make_model(tasks={"entities": SPAN_TAGS}, name="spans-ner", params=SPAN_PARAMS)


def test_span_models_read_texts_and_spans_token_models_token_lists():
    kind = get("token-classification")
    assert kind.dataset_mismatch(["text", "entities"], set(), ["text", "entities"], SPAN_PARAMS) is None
    assert "holds token lists" in kind.dataset_mismatch(["tokens", "tags", "text"], {"tokens", "tags"},
                                                        ["tokens", "tags"], SPAN_PARAMS)
    assert "token dataset" in kind.dataset_mismatch(["tokens", "tags"], {"tokens", "tags"}, ["text", "entities"],
                                                    SPAN_PARAMS)
    assert "token dataset" in kind.dataset_mismatch(["tokens", "tags"], {"tokens", "tags"}, (), SPAN_PARAMS)
    # a model trained on token lists still wants a token dataset
    assert "not a token dataset" in kind.dataset_mismatch(["text", "entities"], set(), ["text", "entities"],
                                                          {"tokens_column": "tokens", "tags_column": "tags"})


def test_a_span_model_is_evaluated_on_span_data_only(client, sent):
    spans = _upload(client, SPANS_JSONL, "spans.jsonl")
    conll = _upload(client, CONLL.encode(), "ner.conll")
    model_id = span_model()

    page = client.get(f"/models/{model_id}").get_data(as_text=True)
    assert _options(page) == [str(spans)]
    assert "Text column (default: the model&#39;s)" in page and "Spans column (default: the model&#39;s)" in page
    assert "Texts with entity spans" in page

    error = assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": conll}),
                         422, "dataset_task_mismatch")
    assert "it is a token dataset" in error["message"] and "a model trained on span data" in error["message"]
    other = _upload(client, b'{"text": "Lima", "entities": [{"start": 0, "end": 4, "label": "city"}]}', "o.jsonl")
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": other}),
                         422, "unknown_labels")
    assert "entity types the model does not know ('city')" in error["message"]
    assert _jobs() == 0 and sent == []

    response = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": spans})
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    assert sent == [(job_id, "evaluate")]
    with db.session() as session:
        params = session.get(Job, job_id).params
    assert (params["text_column"], params["spans_column"], params["tags"]) == ("text", "entities", SPAN_TAGS)
    assert "tokens_column" not in params
