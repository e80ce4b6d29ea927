"""Bad token-classification input through the API (issue 17), on SQLite and on PostgreSQL (migrated as production
builds it, see test_hostile_input.py): every case gets its exact 4xx with ``{"error": {code, message}}``, never a
500, and a refused request writes no job (nor a dataset, for a refused upload)."""
from __future__ import annotations

import pytest

from core.db import db
from core.schema import TrainedModel

from . import factories as f
from .bad_input import (
    assert_classify_cases_refused, assert_evaluation_refused, assert_training_refused, assert_upload_refused, jsonl,
    upload)
from .test_hostile_input import migrated_client  # noqa: F401  (fixture: an admin's client on each backend)
from .test_token_pages import TAGS, token_model

GOOD = [{"tokens": ["Bob", "lives", "in", "Paris"], "tags": ["B-person", "O", "O", "B-location"]},
        {"tokens": ["Ann", "Lee", "left"], "tags": ["B-person", "I-person", "O"]}]


def _with(row: dict) -> bytes:
    """The good sentences and one more row: a dataset whose bad row is not the first."""
    return jsonl(*GOOD, row)


TRAINING_CASES = [
    # (name, dataset rows, extra request fields, status, code, words of the message)
    ("tokens and tags of different lengths", _with({"tokens": ["a", "b"], "tags": ["O"]}), {}, 422,
     "tokens_tags_mismatch", "row 3: 2 tokens but 1 tags"),
    ("tokens not a list", _with({"tokens": "a b", "tags": ["O", "O"]}), {}, 422, "invalid_tokens",
     "must hold a JSON array of strings"),
    ("tokens not strings", _with({"tokens": [1, 2], "tags": ["O", "O"]}), {}, 422, "invalid_tokens",
     "must hold a JSON array of strings"),
    ("tags not a list", _with({"tokens": ["a"], "tags": {"O": 1}}), {}, 422, "invalid_tokens",
     "column 'tags' must hold a JSON array of strings"),
    ("an empty sentence", _with({"tokens": [], "tags": []}), {}, 422, "empty_sentence", "row 3"),
    ("a blank token", _with({"tokens": ["a", " "], "tags": ["O", "O"]}), {}, 422, "invalid_tokens",
     "empty, blank or holds a NUL"),
    ("NUL in a token", _with({"tokens": ["a\x00b"], "tags": ["O"]}), {}, 422, "invalid_tokens", "NUL"),
    ("NUL in a tag", _with({"tokens": ["a"], "tags": ["B-x\x00"]}), {}, 422, "invalid_tag", "NUL"),
    ("a tag of 150 characters", _with({"tokens": ["a"], "tags": ["B-" + "x" * 148]}), {}, 422, "invalid_tag",
     "longer than 100 characters"),
    ("a tag set with one tag", jsonl({"tokens": ["a", "b"], "tags": ["O", "O"]}, {"tokens": ["c"], "tags": ["O"]}),
     {}, 422, "too_few_classes", "at least 2 distinct tags"),
    ("multi_label", jsonl(*GOOD), {"multi_label": True}, 422, "validation_error",
     "multi_label applies to the text-classification task type, not 'token-classification'"),
    ("label_columns of two", jsonl(*GOOD), {"label_columns": ["tags", "tokens"]}, 422, "validation_error",
     "reads its labels from tags_column: label_column(s) do not apply"),
    ("label_column other than the tags", jsonl(*GOOD), {"label_column": "tokens"}, 422, "validation_error",
     "reads its labels from tags_column: label_column(s) do not apply"),
]

SPAN_CASES = [
    ("a span past the text", [{"start": 0, "end": 99, "label": "person"}], "invalid_spans", "outside the text"),
    ("a negative span", [{"start": -1, "end": 3, "label": "person"}], "invalid_spans", "outside the text"),
    ("overlapping spans", [{"start": 0, "end": 5, "label": "person"}, {"start": 4, "end": 9, "label": "place"}],
     "overlapping_spans", "spans overlap"),
    ("a span's label under an unknown field", [{"start": 0, "end": 3, "type": "person"}], "invalid_spans",
     "a span needs a label"),
    ("a span's offsets as strings", [{"start": "0", "end": 3, "label": "person"}], "invalid_spans",
     "must be integers"),
    ("spans not a list", {"start": 0, "end": 3, "label": "person"}, "invalid_spans", "JSON array of spans"),
]


@pytest.mark.parametrize("case", TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_bad_token_training_data_is_a_clear_422(migrated_client, sent, case):
    client = migrated_client
    _, rows, extra, status, code, words = case
    assert_training_refused(client, sent, rows, "ner.jsonl", {"task_type": "token-classification", **extra}, status,
                            code, words)


@pytest.mark.parametrize("case", SPAN_CASES, ids=[c[0] for c in SPAN_CASES])
def test_bad_entity_spans_are_a_clear_422(migrated_client, sent, case):
    client = migrated_client
    _, spans, code, words = case
    good = {"text": "Bob lives in Paris", "spans": [{"start": 0, "end": 3, "label": "person"}]}
    error = assert_training_refused(
        client, sent, jsonl(good, {"text": "Ann Lee left town", "spans": spans}), "spans.jsonl",
        {"task_type": "token-classification", "text_column": "text", "spans_column": "spans"}, 422, code, words)
    assert "row 2" in error["message"], error


@pytest.mark.parametrize(("content", "words"), [
    (b"Empire\tB-location\nState\n", "line 2"),  # a line of one column
    (b"Empire\tB-location\nSt\x00ate\tO\n", "NUL"),
    (b"Empire\tB-" + b"x" * 200 + b"\n", "line 1"),  # a very long tag
])
def test_bad_conll_uploads_are_a_clear_400(migrated_client, content, words):
    error = assert_upload_refused(migrated_client, content, "x.conll", "invalid_conll")
    assert words in error["message"], error


def _classify_cases(ner: int, text_model: int) -> list[tuple[str, dict, int, str, str]]:
    """(name, body, status, code, words of the message) of bad classify/predict bodies."""
    return [
        ("tokens not a list of lists", {"model_id": ner, "tokens": ["Bob", "left"]}, 422, "validation_error",
         "tokens"),
        ("tokens a string", {"model_id": ner, "tokens": "Bob left"}, 422, "validation_error", "tokens"),
        ("tokens not strings", {"model_id": ner, "tokens": [["Bob", 1]]}, 422, "validation_error", "tokens"),
        ("an empty sentence", {"model_id": ner, "tokens": [["Bob"], []]}, 422, "validation_error", "tokens"),
        ("no sentence", {"model_id": ner, "tokens": []}, 422, "validation_error", "tokens"),
        ("a blank token", {"model_id": ner, "tokens": [["Bob", "  "]]}, 422, "validation_error",
         "tokens[0][1] is empty"),
        ("NUL in a token", {"model_id": ner, "tokens": [["Bo\x00b"]]}, 422, "validation_error",
         "must not contain a NUL character"),
        ("tokens to a text model", {"model_id": text_model, "tokens": [["great"]]}, 422, "tokens_not_supported",
         "are for token-classification models"),
        ("pairs to a token model", {"model_id": ner, "pairs": [["Bob", "left"]]}, 422, "pairs_not_supported",
         "send texts or tokens, not pairs"),
        ("an unknown aggregation_strategy", {"model_id": ner, "texts": ["Bob"], "aggregation_strategy": "longest"},
         422, "validation_error", "aggregation_strategy"),
        ("an aggregation_strategy to a text model", {"model_id": text_model, "texts": ["great"],
                                                    "aggregation_strategy": "max"}, 422,
         "aggregation_not_supported", "applies to token-classification models"),
        ("texts and tokens", {"model_id": ner, "texts": ["Bob"], "tokens": [["Bob"]]}, 422, "validation_error",
         "give one of texts"),
    ]


@pytest.mark.parametrize("path", ["/api/v1/jobs/classify", "/api/v1/predict"])
def test_bad_token_inputs_at_classify_are_a_clear_422(migrated_client, sent, subtests, path):
    client = migrated_client
    ner, text_model = token_model(), f.make_model(name="plain")
    assert_classify_cases_refused(client, sent, subtests, path, _classify_cases(ner, text_model))


def test_evaluating_on_a_dataset_of_the_other_task_type_is_a_clear_422(migrated_client, sent):
    client = migrated_client
    conll = upload(client, b"Bob\tB-person\nleft\tO\n\nAnn\tB-person\n", "ner.conll")
    texts = upload(client, b"text,label\ngreat,pos\nawful,neg\n", "reviews.csv")
    ner = token_model()
    text_model = f.make_model(name="plain", params={"text_column": "text", "label_column": "label",
                                                    "label_columns": ["label"]})
    for model_id, dataset_id, words in [(ner, texts, "not a token dataset"),
                                        (text_model, conll, "it is a token dataset")]:
        assert_evaluation_refused(client, sent, model_id, dataset_id, "dataset_task_mismatch", words)
    with db.session() as session:  # the models stay as they were
        assert session.get(TrainedModel, ner).tasks == {"tags": TAGS}


@pytest.mark.parametrize(("row", "code", "words"), [
    ({"tokens": ["a"], "tags": ["B-" + "x" * 148]}, "invalid_tag", "longer than 100 characters"),
    ({"tokens": ["a", "b"], "tags": ["O"]}, "tokens_tags_mismatch", "row 3: 2 tokens but 1 tags"),
    ({"tokens": ["a"], "tags": ["B-animal"]}, "unknown_labels", "'B-animal'"),
])
def test_evaluating_on_bad_token_rows_is_a_clear_422(migrated_client, sent, row, code, words):
    client = migrated_client
    assert_evaluation_refused(client, sent, token_model(), upload(client, _with(row), "eval.jsonl"), code, words)
