"""Bad multiple-choice input through the API (issue 18), on SQLite and on PostgreSQL (migrated as production builds
it, see test_hostile_input.py): every case gets its exact 4xx with ``{"error": {code, message}}``, never a 500, and a
refused request writes no job (nor a dataset, for a refused upload). The pattern of test_qa_bad_input.py."""
from __future__ import annotations

import csv
import io
import json

import pytest

from core.schema import Job
from core.task_types.multiple_choice import MAX_CHOICE_CHARS, MAX_CHOICES

from . import factories as f
from .bad_input import (
    assert_classify_cases_refused, assert_evaluation_refused, assert_training_refused, assert_upload_refused, count,
    jsonl, upload)
from .helpers import assert_error
from .test_hostile_input import migrated_client  # noqa: F401  (fixture: an admin's client on each backend)
from .test_qa_bad_input import GOOD as QA_ROWS, qa_model
from .test_token_pages import token_model

ENDINGS = ["ending0", "ending1", "ending2", "ending3"]
GOOD = [{"context": "Ann owns a cat.", "question": "Then", "ending0": "the cat runs home", "ending1": "the dog sleeps",
         "ending2": "the bird sleeps", "ending3": "", "label": "0"},
        {"context": "Bob owns a dog.", "question": "Then", "ending0": "the cat sleeps", "ending1": "the dog runs home",
         "ending2": "the bird sleeps", "ending3": "the horse sleeps", "label": "1"}]
MC_PARAMS = {"family": "bert", "task_type": "multiple-choice", "context_column": "context",
             "question_column": "question", "choice_columns": ENDINGS, "choices_column": None,
             "label_column": "label", "label_columns": ["label"], "max_length": 32}
MC_TRAIN = {"task_type": "multiple-choice", "max_length": 32}
HUGE = "9" * 5000  # past Python's 4300-digit limit on int(str)


def mc_model(**params) -> int:
    """A multiple-choice model row (4 numbered endings) as a training job records it."""
    return f.make_model(tasks={"choice": ["0", "1", "2", "3"]}, name="swag", params={**MC_PARAMS, **params})


def _csv(*rows: dict, columns: list[str] | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or list(GOOD[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _with(**fields) -> bytes:
    """The good rows and one more (row 3): a CSV whose bad row is not the first."""
    return _csv(*GOOD, {**GOOD[0], **fields})


def _listed(*cells: str, label: str = "0") -> bytes:
    """A CSV with one ``choices`` column (a JSON array per row): a good row, then one per cell (row 2, ...)."""
    rows = [{"context": "Ann owns a cat.", "choices": json.dumps(["runs", "sleeps"]), "label": label}]
    rows += [{"context": "Bob owns a dog.", "choices": cell, "label": label} for cell in cells]
    return _csv(*rows, columns=["context", "choices", "label"])


LISTED = {"choices_column": "choices"}
TRAINING_CASES = [
    # (name, upload, filename, extra request fields, status, code, words of the message)
    ("a row with one choice", _with(ending1="", ending2="", ending3=""), "swag.csv", {}, 422, "too_few_choices",
     "row 3: 1 choice(s); a multiple-choice row needs at least 2"),
    ("a row with no choice", _with(ending0="", ending1="", ending2="", ending3=""), "swag.csv", {}, 422,
     "too_few_choices", "row 3: 0 choice(s)"),
    ("a gap in the numbered choices", _with(ending1="", ending2="the bird sleeps"), "swag.csv", {}, 422,
     "invalid_choices", "row 3: choice column 'ending1' is empty but 'ending2' after it is not"),
    ("a gap after the last choice", _with(ending2="", ending3="the horse sleeps"), "swag.csv", {}, 422,
     "invalid_choices", "choice column 'ending2' is empty but 'ending3' after it is not"),
    ("a label past the choices", _with(label="3"), "swag.csv", {}, 422, "invalid_label",
     "row 3: label 3 is out of range: the row has 3 choices (positions 0 to 2)"),
    ("a negative label", _with(label="-1"), "swag.csv", {}, 422, "invalid_label", "row 3: label -1 is out of range"),
    ("a fractional label", _with(label="1.5"), "swag.csv", {}, 422, "invalid_label",
     "row 3: label '1.5' matches no choice"),
    ("a label text matching no choice", _with(label="the horse flies"), "swag.csv", {}, 422, "invalid_label",
     "row 3: label 'the horse flies' matches no choice: give the right choice's position or its exact text"),
    ("a label that is a position and another choice's text",
     _with(ending0="2", ending1="0", ending2="1", ending3="", label="1"), "swag.csv", {}, 422, "ambiguous_label",
     "row 3: label '1' is ambiguous: it is position 1 (choice '0') and the text of the choice at position 2"),
    ("a label that is a position and another choice's text (4 choices)",
     _with(ending0="1", ending1="2", ending2="3", ending3="4", label="2"), "swag.csv", {}, 422, "ambiguous_label",
     "row 3: label '2' is ambiguous: it is position 2 (choice '3') and the text of the choice at position 1"),
    ("a label text matching two choices", _with(ending1="the cat runs home", label="the cat runs home"),
     "swag.csv", {}, 422, "invalid_label", "matches several choices"),
    ("an empty label", _with(label=""), "swag.csv", {}, 422, "invalid_label", "row 3: the label cell ('label') is "
     "empty"),
    ("a label of 2^64", _with(label=str(2**64)), "swag.csv", {}, 422, "invalid_label",
     f"row 3: label {2**64} is out of range"),
    ("a label of 5000 digits", _with(label=HUGE), "swag.csv", {}, 422, "invalid_label",
     "row 3: label 99999999999999999999... (5000 digits) is out of range"),
    ("a label of -5000 digits", _with(label="-" + HUGE), "swag.csv", {}, 422, "invalid_label",
     "row 3: label -99999999999999999999... (5000 digits) is out of range"),
    ("a label NaN", _with(label="NaN"), "swag.csv", {}, 422, "invalid_label", "row 3: label 'NaN' matches no choice"),
    ("a JSON label 1.5", jsonl(*GOOD, {**GOOD[0], "label": 1.5}), "swag.jsonl", {}, 422, "invalid_label",
     "row 3: label '1.5' matches no choice"),
    ("a JSON label true", jsonl(*GOOD, {**GOOD[0], "label": True}), "swag.jsonl", {}, 422, "invalid_label",
     "row 3: label"),
    ("a JSON label 2^64", jsonl(*GOOD, {**GOOD[0], "label": 2**64}), "swag.jsonl", {}, 422, "invalid_label",
     "out of range"),
    ("a choice of more than the characters allowed", _with(ending1="x" * (MAX_CHOICE_CHARS + 1)), "swag.csv", {},
     422, "invalid_choices", f"row 3: a choice holds a NUL character or is longer than {MAX_CHOICE_CHARS}"),
    ("a NUL in a choices cell (JSON-escaped)", _listed('["r\\u0000uns", "sleeps"]'), "listed.csv", LISTED, 422,
     "invalid_choices", "row 2: a choice holds a NUL character"),
    ("more than the most choices", _listed(json.dumps([f"c{i}" for i in range(MAX_CHOICES + 1)])), "listed.csv",
     LISTED, 422, "too_many_choices", f"row 2: {MAX_CHOICES + 1} choices; at most {MAX_CHOICES}"),
    ("an empty choices list", _listed("[]"), "listed.csv", LISTED, 422, "too_few_choices", "row 2: 0 choice(s)"),
    ("a choices list of one", _listed('["runs"]'), "listed.csv", LISTED, 422, "too_few_choices", "row 2: 1 choice(s)"),
    ("a choices cell not JSON", _listed("runs | sleeps"), "listed.csv", LISTED, 422, "invalid_choices",
     "row 2: column 'choices' must hold a JSON array of strings, got 'runs | sleeps'"),
    ("a choices cell of numbers", _listed("[1, 2]"), "listed.csv", LISTED, 422, "invalid_choices",
     "must hold a JSON array of strings, got '[1, 2]'"),
    ("a choices cell an object", _listed('{"a": "b"}'), "listed.csv", LISTED, 422, "invalid_choices",
     "must hold a JSON array of strings"),
    ("a choices cell a JSON string", _listed('"runs"'), "listed.csv", LISTED, 422, "invalid_choices",
     "must hold a JSON array of strings"),
    ("a choices cell of nested lists", _listed('[["runs"], ["sleeps"]]'), "listed.csv", LISTED, 422,
     "invalid_choices", "must hold a JSON array of strings"),
    ("a choices cell of deeply nested JSON", _listed("[" * 100_000), "listed.csv", LISTED, 422, "invalid_choices",
     "row 2: column 'choices' must hold a JSON array of strings"),
    ("a choices cell with a blank choice", _listed('["runs", " "]'), "listed.csv", LISTED, 422, "invalid_choices",
     "row 2: a choice in 'choices' is empty"),
    ("an empty choices cell", _listed(""), "listed.csv", LISTED, 422, "invalid_choices",
     "row 2: column 'choices' must hold a JSON array of strings"),
    ("both choice_columns and choices_column", _listed(), "listed.csv",
     {**LISTED, "choice_columns": ["context", "label"]}, 422, "validation_error", "not both"),
    ("choice_columns of one column", _csv(*GOOD), "swag.csv", {"choice_columns": ["ending0"]}, 422,
     "validation_error", "choice_columns needs at least 2 columns"),
    ("choice_columns repeating a column", _csv(*GOOD), "swag.csv", {"choice_columns": ["ending0", "ending0"]}, 422,
     "validation_error", "choice_columns must not repeat a column"),
    ("more choice_columns than the most choices", _csv(*GOOD), "swag.csv",
     {"choice_columns": [f"e{i}" for i in range(MAX_CHOICES + 1)]}, 422, "validation_error",
     f"choice_columns: List should have at most {MAX_CHOICES} items"),
    ("a choice column the dataset lacks", _csv(*GOOD), "swag.csv", {"choice_columns": ["ending0", "ending9"]}, 422,
     "unknown_column", "'ending9'"),
    ("the label as a choice", _csv(*GOOD), "swag.csv", {"choice_columns": ["ending0", "label"]}, 422,
     "invalid_columns", "column(s) 'label' would play two parts"),
    ("a dataset of texts", b"text,label\ngreat,pos\nawful,neg\n", "reviews.csv", {}, 422, "unknown_column",
     "column(s) 'context' not in the dataset; it has text, label"),
    ("a token dataset", b"Bob\tB-person\nleft\tO\n", "ner.conll", {}, 422, "unknown_column",
     "column(s) 'context', 'label' not in the dataset; it has tokens, tags"),
    ("a dataset of texts, its text column named as the context", b"text,label\ngreat,pos\n", "reviews.csv",
     {"context_column": "text"}, 422, "invalid_columns", "the dataset has no ending<N> columns: name the choices"),
    ("a QA dataset", jsonl(*QA_ROWS), "qa.jsonl", {}, 422, "invalid_columns", "the dataset has no ending<N> columns"),
    ("a text family", _csv(*GOOD), "swag.csv", {"family": "bert_lstm"}, 422, "validation_error", "bert_lstm"),
    ("multi_label", _csv(*GOOD), "swag.csv", {"multi_label": True}, 422, "validation_error", "multi_label"),
]


@pytest.mark.parametrize("case", TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_bad_mc_training_data_is_a_clear_4xx(migrated_client, sent, case):
    client = migrated_client
    _, content, filename, extra, status, code, words = case
    assert_training_refused(client, sent, content, filename, {**MC_TRAIN, **extra}, status, code, words)


@pytest.mark.parametrize(("content", "filename", "code"), [
    (_with(context="Ann\x00 owns a cat."), "swag.csv", "invalid_csv"),  # PostgreSQL's text refuses NUL: so does upload
    (_with(ending1="the d\x00og sleeps"), "swag.csv", "invalid_csv"),
    (jsonl(*GOOD, {**GOOD[0], "question": "Th\x00en"}), "swag.jsonl", "invalid_jsonl"),
    (b'{"context": "c", "ending0": "a", "ending1": "b", "label": NaN}\n', "swag.jsonl", "invalid_jsonl"),
    (b'{"context": "c", "ending0": "a", "ending1": "b", "label": Infinity}\n', "swag.jsonl", "invalid_jsonl"),
    (b'{"context": "c", "ending0": "a", "ending1": "b", "label": ' + HUGE.encode() + b"}\n", "swag.jsonl",
     "invalid_jsonl"),
])
def test_mc_uploads_of_what_postgresql_cannot_hold_are_a_clear_400(migrated_client, content, filename, code):
    """NUL characters, NaN and Infinity (PostgreSQL's text and JSON refuse them) and integers past Python's digit
    limit are refused at upload, with nothing stored."""
    assert_upload_refused(migrated_client, content, filename, code)


def _classify_cases(mc: int, text_model: int, ner: int, qa: int) -> list[tuple[str, dict, int, str, str]]:
    """(name, body, status, code, words of the message) of bad classify/predict bodies."""
    good = [{"context": "Ann owns a cat.", "question": "Then", "choices": ["the cat runs", "the dog runs"]}]

    def one(**fields) -> dict:
        return {"model_id": mc, "choice_questions": [{**good[0], **fields}]}

    return [
        ("choice_questions to a text model", {"model_id": text_model, "choice_questions": good}, 422,
         "choice_questions_not_supported", "is a text-classification model"),
        ("choice_questions to a token model", {"model_id": ner, "choice_questions": good}, 422,
         "choice_questions_not_supported", "is a token-classification model"),
        ("choice_questions to a QA model", {"model_id": qa, "choice_questions": good}, 422,
         "choice_questions_not_supported", "is a question-answering model"),
        ("texts to an MC model", {"model_id": mc, "texts": ["Ann owns a cat."]}, 422, "choice_questions_required",
         "is a multiple-choice model"),
        ("pairs to an MC model", {"model_id": mc, "pairs": [["Ann owns a cat.", "the cat runs"]]}, 422,
         "choice_questions_required", "is a multiple-choice model"),
        ("tokens to an MC model", {"model_id": mc, "tokens": [["Ann", "owns"]]}, 422, "choice_questions_required",
         "is a multiple-choice model"),
        ("questions to an MC model", {"model_id": mc, "questions": [{"question": "who?", "context": "Ann."}]}, 422,
         "choice_questions_required", "is a multiple-choice model"),
        ("one choice", one(choices=["the cat runs"]), 422, "validation_error", "choices"),
        ("no choices", one(choices=[]), 422, "validation_error", "choices"),
        ("more than the most choices", one(choices=[f"c{i}" for i in range(MAX_CHOICES + 1)]), 422,
         "validation_error", "choices"),
        ("choices not strings", one(choices=[1, 2]), 422, "validation_error", "choices"),
        ("choices a string", one(choices="the cat runs|the dog runs"), 422, "validation_error", "choices"),
        ("no choices field", {"model_id": mc, "choice_questions": [{"context": "Ann owns a cat."}]}, 422,
         "validation_error", "choices"),
        ("no context", {"model_id": mc, "choice_questions": [{"choices": ["a", "b"]}]}, 422, "validation_error",
         "context"),
        ("a blank choice", one(choices=["the cat runs", " "]), 422, "validation_error",
         "choice_questions[0].choices[1] is empty or holds a NUL character"),
        ("NUL in a context", one(context="Ann\x00"), 422, "validation_error",
         "choice_questions.0.context: must not contain a NUL character"),
        ("NUL in a question", one(question="Th\x00en"), 422, "validation_error",
         "choice_questions.0.question: must not contain a NUL character"),
        ("NUL in a choice", one(choices=["the cat runs", "the d\x00og runs"]), 422, "validation_error",
         "choice_questions.0.choices.1: must not contain a NUL character"),
        ("a blank context", one(context="  "), 422, "validation_error",
         "choice_questions[0].context is empty or holds a NUL character"),
        ("an unknown field", one(label=0), 422, "validation_error", "label"),
        ("choice_questions as lists", {"model_id": mc, "choice_questions": [["Ann", "a", "b"]]}, 422,
         "validation_error", "choice_questions"),
        ("an empty list", {"model_id": mc, "choice_questions": []}, 422, "validation_error", "choice_questions"),
        ("choice_questions and texts", {"model_id": mc, "choice_questions": good, "texts": ["x"]}, 422,
         "validation_error", "give one of"),
        ("a top_k", {"model_id": mc, "choice_questions": good, "top_k": 2}, 422, "option_not_supported", "top_k"),
        ("an aggregation_strategy", {"model_id": mc, "choice_questions": good, "aggregation_strategy": "max"}, 422,
         "aggregation_not_supported", "is a multiple-choice model: aggregation_strategy applies to token"),
    ]


@pytest.mark.parametrize("path", ["/api/v1/jobs/classify", "/api/v1/predict"])
def test_bad_mc_inputs_at_classify_are_a_clear_422(migrated_client, sent, subtests, path):
    client = migrated_client
    mc, text_model, ner, qa = mc_model(), f.make_model(name="plain"), token_model(), qa_model()
    assert_classify_cases_refused(client, sent, subtests, path, _classify_cases(mc, text_model, ner, qa))


@pytest.mark.parametrize("path", ["/api/v1/jobs/classify", "/api/v1/predict"])
def test_very_long_or_unencodable_choices_are_a_clear_4xx(migrated_client, sent, path):
    """Past the deployment's characters per text, a context, a question or a choice is a 422; a lone surrogate (no
    UTF-8, no PostgreSQL text) is a 400."""
    client = migrated_client
    from web.context import EXTENSION_KEY

    mc, limit = mc_model(), client.application.extensions[EXTENSION_KEY].settings.max_text_chars
    long = "x" * (limit + 1)
    for item, where in [({"context": long, "choices": ["a", "b"]}, "choice_questions[0].context"),
                        ({"context": "c", "question": long, "choices": ["a", "b"]}, "choice_questions[0].question"),
                        ({"context": "c", "choices": ["a", long]}, "choice_questions[0].choices[1]")]:
        error = assert_error(client.post(path, json={"model_id": mc, "choice_questions": [item]}), 422,
                             "validation_error")
        assert where in json.dumps(error) and f"the limit is {limit}" in json.dumps(error), error
    body = '{"model_id": %d, "choice_questions": [{"context": "c\\ud800", "choices": ["a", "b"]}]}' % mc
    assert_error(client.post(path, data=body, content_type="application/json"), 400, "invalid_json")
    assert count(Job) == 0 and sent == []


@pytest.mark.parametrize(("content", "filename", "extra", "code", "words"), [
    (_with(ending1="", ending2="", ending3=""), "swag.csv", {}, "too_few_choices", "row 3: 1 choice(s)"),
    (_with(ending1="", ending2="the bird sleeps"), "swag.csv", {}, "invalid_choices",
     "row 3: choice column 'ending1' is empty but 'ending2' after it is not"),
    (_listed("[1, 2]"), "listed.csv", {"choices_column": "choices", "question_column": None}, "invalid_choices",
     "row 2: column 'choices' must hold a JSON array of strings"),
    (b"text,label\ngreat,pos\n", "reviews.csv", {}, "unknown_column",
     "column(s) 'context', 'question', 'ending0', 'ending1', 'ending2', 'ending3' not in the dataset; it has text"),
])
def test_classifying_bad_mc_rows_is_a_clear_422(migrated_client, sent, content, filename, extra, code, words):
    """A dataset classify job is checked row by row before it is queued: no job stops half-way on a bad row."""
    client = migrated_client
    model = mc_model(**({"choice_columns": None, **extra} if extra else {}))
    dataset_id = upload(client, content, filename)
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model, "dataset_id": dataset_id}),
                         422, code)
    assert words in error["message"], error
    assert count(Job) == 0 and sent == []


def test_evaluating_across_task_types_is_a_clear_422(migrated_client, sent):
    client = migrated_client
    texts = upload(client, b"text,label\ngreat,pos\nawful,neg\n", "reviews.csv")
    questions = upload(client, jsonl(*QA_ROWS), "qa.jsonl")
    conll = upload(client, b"Bob\tB-person\nleft\tO\n\nAnn\tB-person\n", "ner.conll")
    swag = upload(client, _csv(*GOOD), "swag.csv")
    mc, qa, ner = mc_model(), qa_model(), token_model()
    text_model = f.make_model(name="plain", params={"text_column": "text", "label_column": "label",
                                                    "label_columns": ["label"]})
    mc_columns = "'context', 'question', 'ending0', 'ending1', 'ending2', 'ending3'"
    cases = [(mc, texts, "unknown_column", f"column(s) {mc_columns} not in the dataset; it has text, label"),
             (mc, questions, "unknown_column", "column(s) 'ending0', 'ending1', 'ending2', 'ending3', 'label' not in "
                                               "the dataset; it has question, context, answers"),
             (mc, conll, "unknown_column", f"column(s) {mc_columns}, 'label' not in the dataset; it has tokens, tags"),
             (qa, swag, "unknown_column", "column(s) 'answers' not in the dataset; a question-answering evaluation "
                                          "reads question, context, answers"),
             (ner, swag, "dataset_task_mismatch", "cannot evaluate a token-classification model: it is not a token "
                                                  "dataset"),
             (text_model, swag, "unknown_column", "column(s) 'text' not in dataset")]
    for model_id, dataset_id, code, words in cases:
        assert_evaluation_refused(client, sent, model_id, dataset_id, code, words)
    assert count(Job) == 0 and sent == []


@pytest.mark.parametrize(("content", "code", "words"), [
    (_with(label="7"), "invalid_label", "row 3: label 7 is out of range"),
    (_with(label=HUGE), "invalid_label", "row 3: label 99999999999999999999... (5000 digits) is out of range"),
    (_with(label="the horse flies"), "invalid_label", "row 3: label 'the horse flies' matches no choice"),
    (_with(ending1="", ending2="", ending3=""), "too_few_choices", "row 3: 1 choice(s)"),
    (_with(ending0="1", ending1="2", ending2="3", ending3="4", label="1"), "ambiguous_label",
     "row 3: label '1' is ambiguous: it is position 1 (choice '2') and the text of the choice at position 0"),
])
def test_evaluating_on_bad_mc_rows_is_a_clear_422(migrated_client, sent, content, code, words):
    client = migrated_client
    assert_evaluation_refused(client, sent, mc_model(), upload(client, content, "swag.csv"), code, words)
