"""Bad question-answering input through the API (issue 18), on SQLite and on PostgreSQL (migrated as production
builds it, see test_hostile_input.py): every case gets its exact 4xx with ``{"error": {code, message}}``, never a
500, and a refused request writes no job (nor a dataset, for a refused upload). The pattern of
test_token_bad_input.py."""
from __future__ import annotations

import csv
import io
import json

import pytest

from core.schema import Job

from . import factories as f
from .bad_input import (
    assert_classify_cases_refused, assert_evaluation_refused, assert_training_refused, assert_upload_refused, count,
    jsonl, upload)
from .helpers import assert_error
from .test_hostile_input import migrated_client  # noqa: F401  (fixture: an admin's client on each backend)
from .test_token_pages import token_model

CONTEXT = "Bob flew to Paris on monday ."
GOOD = [{"question": "where did Bob fly ?", "context": CONTEXT, "answers": {"text": ["Paris"], "answer_start": [12]}},
        {"question": "what did Bob eat ?", "context": CONTEXT, "answers": {"text": [], "answer_start": []}}]
QA_PARAMS = {"family": "bert", "task_type": "question-answering", "context_column": "context",
             "question_column": "question", "answers_column": "answers", "label_column": "answers",
             "label_columns": ["answers"], "max_length": 64, "doc_stride": 16}
QA_TRAIN = {"task_type": "question-answering", "max_length": 64, "doc_stride": 16}
LONG_QUESTION = " ".join(["why"] * 200)  # 200 words: at least 200 tokens, past any window of 64


def qa_model(**params) -> int:
    """A QA model row (windows of 64 tokens overlapping by 16) as a training job records it."""
    return f.make_model(tasks={"answer": ["start", "end"]}, name="reader", params={**QA_PARAMS, **params})


def _with(**fields) -> bytes:
    """The good questions and one more (row 3) about ``CONTEXT``: a dataset whose bad row is not the first."""
    return jsonl(*GOOD, {"question": "who flew ?", "context": CONTEXT,
                          "answers": {"text": ["Bob"], "answer_start": [0]}, **fields})


def _csv(*rows: list) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "context", "answer_text", "answer_start"])
    writer.writerow(["where did Bob fly ?", CONTEXT, "Paris", "12"])
    writer.writerows(rows)
    return out.getvalue().encode()


def _answers_csv(cell: str) -> bytes:
    """A CSV of a good row and one whose answers cell (a JSON cell, row 2) is ``cell``."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "context", "answers"])
    writer.writerow(["who flew ?", CONTEXT, json.dumps({"text": ["Bob"], "answer_start": [0]})])
    writer.writerow(["who flew ?", CONTEXT, cell])
    return out.getvalue().encode()


def _squad(data) -> bytes:
    return json.dumps({"version": "v2.0", "data": data}).encode()


def _paragraph(**overrides) -> dict:
    return {"context": CONTEXT, "qas": [{"id": "q1", "question": "where?",
                                         "answers": [{"text": "Paris", "answer_start": 12}]}], **overrides}


TRAINING_CASES = [
    # (name, upload, filename, extra request fields, status, code, words of the message)
    ("the answer not at answer_start", _with(answers={"text": ["Bob"], "answer_start": [4]}), "qa.jsonl", {}, 422,
     "answer_mismatch", "row 3: the context does not hold the answer 'Bob' at 4 (it holds 'fle')"),
    ("the answer not in the context", _with(answers={"text": ["Rome"], "answer_start": [12]}), "qa.jsonl", {}, 422,
     "answer_mismatch", "row 3: the context does not hold the answer 'Rome'"),
    ("a negative answer_start", _with(answers={"text": ["Bob"], "answer_start": [-1]}), "qa.jsonl", {}, 422,
     "answer_out_of_range", "row 3: answer 'Bob' at -1 is outside the context of 29 characters"),
    ("an answer_start past the context", _with(answers={"text": ["Bob"], "answer_start": [27]}), "qa.jsonl", {},
     422, "answer_out_of_range", "at 27 is outside the context"),
    ("an answer_start of 2^64", _with(answers={"text": ["Bob"], "answer_start": [2**64]}), "qa.jsonl", {}, 422,
     "answer_out_of_range", f"at {2**64} is outside"),
    ("an answer_start of 2^63 in a CSV cell", _csv(["who?", CONTEXT, "Bob", str(2**63)]), "qa.csv", {}, 422,
     "answer_out_of_range", "row 2"),
    ("an answer_start of 5000 digits in a CSV cell", _csv(["who?", CONTEXT, "Bob", "9" * 5000]), "qa.csv", {}, 422,
     "answer_out_of_range", "row 2: answer_start 99999999999999999999... (5000 digits) is outside the context of 29 "
     "characters"),
    ("an answer_start of superscript digits", _csv(["who?", CONTEXT, "Bob", "\u00b2"]), "qa.csv", {}, 422,
     "invalid_answers", "row 2: answer_start must be an integer, got '\u00b2'"),
    ("an answer_start of two minus signs", _csv(["who?", CONTEXT, "Bob", "--0"]), "qa.csv", {}, 422,
     "invalid_answers", "answer_start must be an integer, got '--0'"),
    ("an answer_start NaN in a CSV cell", _csv(["who?", CONTEXT, "Bob", "NaN"]), "qa.csv", {}, 422,
     "invalid_answers", "answer_start must be an integer, got 'NaN'"),
    ("an answer_start 1e300", _with(answers={"text": ["Bob"], "answer_start": [1e300]}), "qa.jsonl", {}, 422,
     "invalid_answers", "answer_start must be an integer, got 1e+300"),
    ("an answer_start true", _with(answers={"text": ["Bob"], "answer_start": [True]}), "qa.jsonl", {}, 422,
     "invalid_answers", "answer_start must be an integer, got True"),
    ("more texts than offsets", _with(answers={"text": ["Bob", "Paris"], "answer_start": [0]}), "qa.jsonl", {},
     422, "invalid_answers", "row 3: 2 answer texts but 1 answer_start offsets"),
    ("an empty answer text", _with(answers={"text": [""], "answer_start": [0]}), "qa.jsonl", {}, 422,
     "invalid_answers", "an answer text must be a non-empty string"),
    ("answers of another shape", _with(answers={"span": [0, 3]}), "qa.jsonl", {}, 422, "invalid_answers",
     "answers must be {\"text\": [...], \"answer_start\": [...]}"),
    ("answers a number", _with(answers=5), "qa.jsonl", {}, 422, "invalid_answers", "row 3: answers must be"),
    ("answers text not JSON", _with(answers="Bob at 0"), "qa.jsonl", {}, 422, "invalid_answers",
     "row 3: the answers cell must be JSON"),
    ("answers a CSV cell of deeply nested JSON", _answers_csv("[" * 100_000), "qa.csv", {}, 422, "invalid_answers",
     "row 2: the answers cell must be JSON"),
    ("answers a CSV cell with a 5000-digit offset",
     _answers_csv('{"text": ["Bob"], "answer_start": [%s]}' % ("9" * 5000)), "qa.csv", {}, 422, "invalid_answers",
     "row 2: the answers cell must be JSON"),
    ("NUL in a SQuAD context", _squad([{"paragraphs": [_paragraph(context="Bob\x00 flew")]}]), "train.json", {},
     422, "invalid_question", "row 1: the context holds a NUL character"),
    ("NUL in a SQuAD question", _squad([{"paragraphs": [_paragraph(qas=[{"question": "who\x00?", "answers": []}])]}]),
     "train.json", {}, 422, "invalid_question", "row 1: the question holds a NUL character"),
    ("NUL in an answer", _with(answers={"text": ["B\x00ob"], "answer_start": [0]}), "qa.jsonl", {}, 422,
     "answer_mismatch", "row 3: the context does not hold the answer"),
    ("a blank question", _with(question="  "), "qa.jsonl", {}, 422, "invalid_question",
     "row 3: the question must be a non-empty string"),
    ("no question", jsonl(*GOOD, {"context": CONTEXT, "answers": {"text": [], "answer_start": []}}), "qa.jsonl",
     {}, 422, "invalid_question", "row 3: the question must be a non-empty string"),
    ("a SQuAD question not a string", _squad([{"paragraphs": [_paragraph(qas=[{"question": ["who"]}])]}]),
     "train.json", {}, 422, "invalid_question", "row 1: the question must be a non-empty string"),
    ("a SQuAD question longer than max_length", _squad([{"paragraphs": [_paragraph(qas=[
        {"question": LONG_QUESTION, "answers": []}])]}]), "train.json", {}, 422, "question_too_long",
     "row 1: the question has at least 200 tokens"),
    ("a question longer than the default max_length", _with(question=" ".join(["why?"] * 200)), "qa.jsonl",
     {"max_length": None, "doc_stride": None}, 422, "question_too_long",
     "row 3: the question has at least 400 tokens: with max_length 384 and doc_stride 128 a question may have at "
     "most 252"),
    ("a question longer than max_length", _with(question=LONG_QUESTION), "qa.jsonl", {}, 422,
     "question_too_long", "row 3: the question has at least 200 tokens: with max_length 64 and doc_stride 16"),
    ("a 100,000-character answer", _with(answers={"text": ["x" * 100_000], "answer_start": [0]}), "qa.jsonl", {},
     422, "answer_out_of_range", "answer 'xxxxx"),
    ("no answerable question", jsonl(GOOD[1], GOOD[1]), "qa.jsonl", {}, 422, "too_few_classes",
     "the dataset has no answerable question"),
    ("doc_stride equal to max_length", jsonl(*GOOD), "qa.jsonl", {"doc_stride": 64}, 422, "validation_error",
     "doc_stride (64) must be less than max_length - 4 (60)"),
    ("doc_stride past max_length", jsonl(*GOOD), "qa.jsonl", {"doc_stride": 300}, 422, "validation_error",
     "doc_stride (300) must be less than max_length - 4"),
    ("doc_stride 0", jsonl(*GOOD), "qa.jsonl", {"doc_stride": 0}, 422, "validation_error", "doc_stride"),
    ("the same column twice", jsonl(*GOOD), "qa.jsonl", {"context_column": "question"}, 422, "validation_error",
     "context_column, question_column and answers_column must differ"),
    ("a label_column other than the answers", jsonl(*GOOD), "qa.jsonl", {"label_column": "question"}, 422,
     "validation_error", "reads its answers from answers_column: label_column(s) do not apply"),
    ("a missing answers column", jsonl(*GOOD), "qa.jsonl", {"answers_column": "gold"}, 422, "unknown_column",
     "'gold'"),
    ("a dataset of texts", b"text,label\ngreat,pos\nawful,neg\n", "reviews.csv", {}, 422, "unknown_column",
     "column(s) 'question', 'context', 'answers' not in the dataset; it has text, label"),
    ("a token dataset", b"Bob\tB-person\nleft\tO\n", "ner.conll", {}, 422, "unknown_column",
     "column(s) 'question', 'context', 'answers' not in the dataset; it has tokens, tags"),
    ("a text family", jsonl(*GOOD), "qa.jsonl", {"family": "bert_lstm"}, 422, "validation_error", "bert_lstm"),
    ("multi_label", jsonl(*GOOD), "qa.jsonl", {"multi_label": True}, 422, "validation_error", "multi_label"),
    ("a token option", jsonl(*GOOD), "qa.jsonl", {"tokens_column": "question"}, 422, "validation_error",
     "tokens_column"),
    # a nested SQuAD file of a bad structure
    ("SQuAD data not a list", _squad({"paragraphs": []}), "train.json", {}, 422, "invalid_squad",
     "row 1: a SQuAD file's data must be a list of articles"),
    ("SQuAD article without paragraphs", _squad([{"title": "x"}]), "train.json", {}, 422, "invalid_squad",
     "every SQuAD article needs a list of paragraphs"),
    ("SQuAD article not an object", _squad(["x"]), "train.json", {}, 422, "invalid_squad",
     "every SQuAD article needs a list of paragraphs"),
    ("SQuAD paragraph without qas", _squad([{"paragraphs": [{"context": CONTEXT}]}]), "train.json", {}, 422,
     "invalid_squad", "every SQuAD paragraph needs a context and a list of qas"),
    ("SQuAD paragraph without a context", _squad([{"paragraphs": [_paragraph(context=None)]}]), "train.json", {},
     422, "invalid_question", "the context must be a non-empty string"),
    ("SQuAD qa not an object", _squad([{"paragraphs": [_paragraph(qas=["where?"])]}]), "train.json", {}, 422,
     "invalid_squad", "a SQuAD qa must be an object"),
    ("SQuAD answer not at its offset", _squad([{"paragraphs": [_paragraph(qas=[{"question": "where?", "answers": [
        {"text": "Paris", "answer_start": 3}]}])]}]), "train.json", {}, 422, "answer_mismatch",
     "the context does not hold the answer 'Paris' at 3"),
    ("SQuAD data a string that is not JSON", jsonl({"data": "not json"}), "squad.jsonl", {}, 422, "invalid_squad",
     "row 1: a SQuAD file's data must be a list of articles"),
    ("SQuAD data as a CSV cell that is not JSON", b"data\n{not json\n", "squad.csv", {}, 422, "invalid_squad",
     "row 1: a SQuAD file's data must be a list of articles"),
]


@pytest.mark.parametrize("case", TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_bad_qa_training_data_is_a_clear_4xx(migrated_client, sent, case):
    client = migrated_client
    _, content, filename, extra, status, code, words = case
    assert_training_refused(client, sent, content, filename, {**QA_TRAIN, **extra}, status, code, words)


@pytest.mark.parametrize(("content", "filename", "code"), [
    (_with(context="Bob\x00 flew"), "qa.jsonl", "invalid_jsonl"),  # PostgreSQL's text refuses NUL: so does upload
    (_with(question="who\x00?"), "qa.jsonl", "invalid_jsonl"),
    (_csv(["who\x00?", CONTEXT, "Bob", "0"]), "qa.csv", "invalid_csv"),
    (b'{"question": "q", "context": "c", "answers": {"text": ["c"], "answer_start": [NaN]}}\n', "qa.jsonl",
     "invalid_jsonl"),
    (b'{"question": "q", "context": "c", "answers": {"text": ["c"], "answer_start": [Infinity]}}\n', "qa.jsonl",
     "invalid_jsonl"),
    (b'{"version": "v2.0", "data": [{"paragraphs": [{"context": "c", "qas": [{"answers": [{"answer_start": '
     + b"9" * 5000 + b'}]}]}]}]}', "train.json", "invalid_jsonl"),
])
def test_qa_uploads_of_what_postgresql_cannot_hold_are_a_clear_400(migrated_client, content, filename, code):
    """NUL characters, NaN and Infinity (PostgreSQL's text and JSON refuse them) and integers past Python's digit
    limit are refused at upload, with nothing stored."""
    assert_upload_refused(migrated_client, content, filename, code)


def _classify_cases(qa: int, text_model: int, ner: int) -> list[tuple[str, dict, int, str, str]]:
    """(name, body, status, code, words of the message) of bad classify/predict bodies."""
    good = [{"question": "where did Bob fly ?", "context": CONTEXT}]
    return [
        ("questions to a text model", {"model_id": text_model, "questions": good}, 422, "questions_not_supported",
         "are for question-answering models"),
        ("questions to a token model", {"model_id": ner, "questions": good}, 422, "questions_not_supported",
         "is a token-classification model"),
        ("texts to a QA model", {"model_id": qa, "texts": ["where did Bob fly ?"]}, 422, "questions_required",
         "is a question-answering model: send questions"),
        ("pairs to a QA model", {"model_id": qa, "pairs": [["where?", CONTEXT]]}, 422, "questions_required",
         "send questions"),
        ("tokens to a QA model", {"model_id": qa, "tokens": [["where", "?"]]}, 422, "questions_required",
         "send questions"),
        ("an aggregation_strategy to a QA model", {"model_id": qa, "questions": good, "aggregation_strategy": "max"},
         422, "questions_required", "send questions"),
        ("top_k 0", {"model_id": qa, "questions": good, "top_k": 0}, 422, "validation_error", "top_k"),
        ("top_k 21", {"model_id": qa, "questions": good, "top_k": 21}, 422, "validation_error", "top_k"),
        ("top_k 2^64", {"model_id": qa, "questions": good, "top_k": 2**64}, 422, "validation_error", "top_k"),
        ("top_k a string", {"model_id": qa, "questions": good, "top_k": "three"}, 422, "validation_error", "top_k"),
        ("max_answer_length 0", {"model_id": qa, "questions": good, "max_answer_length": 0}, 422,
         "validation_error", "max_answer_length"),
        ("max_answer_length 513", {"model_id": qa, "questions": good, "max_answer_length": 513}, 422,
         "validation_error", "max_answer_length"),
        ("top_k to a text model", {"model_id": text_model, "texts": ["great"], "top_k": 2}, 422,
         "option_not_supported", "top_k apply to question-answering models"),
        ("max_answer_length to a token model", {"model_id": ner, "texts": ["Bob"], "max_answer_length": 5}, 422,
         "option_not_supported", "max_answer_length apply to question-answering models"),
        ("NUL in a question", {"model_id": qa, "questions": [{"question": "wh\x00ere?", "context": CONTEXT}]}, 422,
         "validation_error", "must not contain a NUL character"),
        ("NUL in a context", {"model_id": qa, "questions": [{"question": "where?", "context": "Bob\x00"}]}, 422,
         "validation_error", "must not contain a NUL character"),
        ("a blank question", {"model_id": qa, "questions": [{"question": " ", "context": CONTEXT}]}, 422,
         "validation_error", "questions[0][0] is empty"),
        ("an empty context", {"model_id": qa, "questions": [{"question": "where?", "context": ""}]}, 422,
         "validation_error", "questions[0][1] is empty"),
        ("no context", {"model_id": qa, "questions": [{"question": "where?"}]}, 422, "validation_error",
         "context"),
        ("a question not a string", {"model_id": qa, "questions": [{"question": 5, "context": CONTEXT}]}, 422,
         "validation_error", "question"),
        ("an unknown field in a question", {"model_id": qa, "questions": [{**good[0], "answer": "Paris"}]}, 422,
         "validation_error", "answer"),
        ("questions as pairs", {"model_id": qa, "questions": [["where?", CONTEXT]]}, 422, "validation_error",
         "questions"),
        ("no question", {"model_id": qa, "questions": []}, 422, "validation_error", "questions"),
        ("questions and texts", {"model_id": qa, "questions": good, "texts": ["x"]}, 422, "validation_error",
         "give one of texts"),
        ("a question longer than max_length", {"model_id": qa, "questions": [
            good[0], {"question": LONG_QUESTION, "context": CONTEXT}]}, 422, "question_too_long",
         "question 2 has at least 200 tokens: with max_length 64 and doc_stride 16 a question may have at most 44"),
    ]


@pytest.mark.parametrize("path", ["/api/v1/jobs/classify", "/api/v1/predict"])
def test_very_long_or_unencodable_questions_are_a_clear_4xx(migrated_client, sent, path):
    """Past the deployment's characters per text, a context or a question is a 422; a lone surrogate (no UTF-8,
    no PostgreSQL text) is a 400."""
    client = migrated_client
    from web.context import EXTENSION_KEY

    qa, limit = qa_model(), client.application.extensions[EXTENSION_KEY].settings.max_text_chars
    for item, where in [({"question": "where?", "context": "x" * (limit + 1)}, "questions[0][1]"),
                        ({"question": "x" * (limit + 1), "context": CONTEXT}, "questions[0][0]")]:
        error = assert_error(client.post(path, json={"model_id": qa, "questions": [item]}), 422, "validation_error")
        assert where in json.dumps(error) and f"limit is {limit}" in json.dumps(error), error
    body = '{"model_id": %d, "questions": [{"question": "wh\\ud800?", "context": "Bob"}]}' % qa
    assert_error(client.post(path, data=body, content_type="application/json"), 400, "invalid_json")
    assert count(Job) == 0 and sent == []


@pytest.mark.parametrize("path", ["/api/v1/jobs/classify", "/api/v1/predict"])
def test_bad_qa_inputs_at_classify_are_a_clear_422(migrated_client, sent, subtests, path):
    client = migrated_client
    qa, text_model, ner = qa_model(), f.make_model(name="plain"), token_model()
    assert_classify_cases_refused(client, sent, subtests, path, _classify_cases(qa, text_model, ner))


def test_an_imported_qa_model_bounds_questions_by_its_own_windows(migrated_client, sent):
    """An imported model records only its max_length: its windows overlap as its config says (a third of it)."""
    imported = f.make_model(tasks={"answer": ["start", "end"]}, name="imported",
                            params={"family": "bert", "task_type": "question-answering", "max_length": 32,
                                    "imported_from": "qa.zip"})
    error = assert_error(migrated_client.post("/api/v1/predict", json={"model_id": imported, "questions": [
        {"question": " ".join(["why"] * 20), "context": CONTEXT}]}), 422, "question_too_long")
    assert "with max_length 32 and doc_stride 10 a question may have at most 18" in error["message"], error
    assert count(Job) == 0 and sent == []


def test_a_qa_dataset_job_checks_its_columns(migrated_client, sent):
    client = migrated_client
    qa = qa_model()
    texts = upload(client, b"text,label\ngreat,pos\nawful,neg\n", "reviews.csv")
    questions = upload(client, jsonl(*GOOD), "qa.jsonl")
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": qa, "dataset_id": texts}), 422,
                         "unknown_column")
    assert "'question', 'context' not in dataset" in error["message"], error
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": qa, "dataset_id": questions,
                                                                     "top_k": 99}), 422, "validation_error")
    assert "top_k" in json.dumps(error)
    error = assert_error(client.post("/api/v1/jobs/classify", json={
        "model_id": f.make_model(name="plain"), "dataset_id": questions, "text_column": "question", "top_k": 2}),
        422, "option_not_supported")
    assert count(Job) == 0 and sent == []


def test_evaluating_across_task_types_is_a_clear_422(migrated_client, sent):
    client = migrated_client
    conll = upload(client, b"Bob\tB-person\nleft\tO\n\nAnn\tB-person\n", "ner.conll")
    texts = upload(client, b"text,label\ngreat,pos\nawful,neg\n", "reviews.csv")
    questions = upload(client, jsonl(*GOOD), "qa.jsonl")
    squad = upload(client, _squad([{"paragraphs": [_paragraph()]}]), "dev.json")
    qa, ner = qa_model(), token_model()
    text_model = f.make_model(name="plain", params={"text_column": "text", "label_column": "label",
                                                    "label_columns": ["label"]})
    cases = [(qa, texts, "dataset_task_mismatch", "it has no 'question', 'context', 'answers' columns"),
             (qa, conll, "dataset_task_mismatch", "it has no 'question', 'context', 'answers' columns"),
             (ner, questions, "dataset_task_mismatch", "not a token dataset"),
             (ner, squad, "dataset_task_mismatch", "not a token dataset"),
             (text_model, questions, "unknown_column", "column(s) 'text', 'label' not in dataset"),
             (text_model, squad, "unknown_column", "column(s) 'text', 'label' not in dataset")]
    for model_id, dataset_id, code, words in cases:
        assert_evaluation_refused(client, sent, model_id, dataset_id, code, words)
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": qa, "dataset_id": questions,
                                                                     "text_column": "question"}), 422,
                         "invalid_columns")
    assert "reads context_column and question_column" in error["message"]
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": qa, "dataset_id": questions,
                                                                     "label_column": "gold"}), 422, "unknown_column")
    assert "column(s) 'gold' not in the dataset; a question-answering evaluation reads question, context, gold" \
        in error["message"], error
    assert count(Job) == 0 and sent == []


@pytest.mark.parametrize(("content", "filename", "code", "words"), [
    (_with(answers={"text": ["Bob"], "answer_start": [5]}), "qa.jsonl", "answer_mismatch", "row 3"),
    (_with(answers={"text": ["Bob"], "answer_start": [2**64]}), "qa.jsonl", "answer_out_of_range", "row 3"),
    (_with(question=LONG_QUESTION), "qa.jsonl", "question_too_long", "row 3: the question has at least 200 tokens"),
    (_csv(["who?", CONTEXT, "Bob", "9" * 5000]), "qa.csv", "answer_out_of_range", "row 2"),
    (jsonl({"data": "[1, 2"}), "squad.jsonl", "invalid_squad", "row 1"),
    (_squad([]), "empty.json", "nothing_to_evaluate", "no question to evaluate on"),
])
def test_evaluating_on_bad_qa_rows_is_a_clear_422(migrated_client, sent, content, filename, code, words):
    client = migrated_client
    assert_evaluation_refused(client, sent, qa_model(), upload(client, content, filename), code, words)


def _limit_training_work(client, limit: int) -> None:
    from web.context import EXTENSION_KEY

    state = client.application.extensions[EXTENSION_KEY]
    state.settings = state.settings.replace(max_training_work=limit)


@pytest.mark.parametrize(("name", "content", "filename", "words"), [
    # one row whose context is a million characters: 200,000 words, at least 4,651 windows of 64 tokens
    ("a one-row file of a 1M-character context",
     jsonl({"question": "where ?", "context": "word " * 199_999 + "Paris",
            "answers": {"text": ["Paris"], "answer_start": [999_995]}}), "long.jsonl",
     "the 1 rows encode as at least 4,651 sequences"),
    # the same as a one-row SQuAD file (its data cell within the upload's 1,000,000-character cell limit)
    ("a SQuAD file of one 990,000-character context",
     _squad([{"paragraphs": [{"context": "word " * 197_990 + "Paris", "qas": [
         {"id": "q1", "question": "where ?", "answers": [{"text": "Paris", "answer_start": 989_950}]}]}]}]),
     "long.json", "the 1 rows encode as at least 4,605 sequences"),
    # one SQuAD paragraph with 3,000 questions: one row, 3,000 windows
    ("one paragraph with thousands of questions",
     _squad([{"paragraphs": [_paragraph(qas=[{"id": str(i), "question": "who flew ?",
                                               "answers": [{"text": "Bob", "answer_start": 0}]}
                                              for i in range(3000)])]}]), "many.json",
     "the 1 rows encode as at least 3,000 sequences"),
])
def test_qa_training_work_counts_every_questions_windows(migrated_client, sent, name, content, filename, words):
    """MAX_TRAINING_WORK counts a QA dataset's windows (a tokenizer-free lower bound), not its rows: one row is a
    question of a huge context, or a whole SQuAD file; both are refused before any job, as any too large training."""
    client = migrated_client
    _limit_training_work(client, 100_000)  # a row-count estimate (1 x 1 x 64, plus an evaluation) passes it
    error = assert_training_refused(client, sent, content, filename, {**QA_TRAIN, "epochs": 1}, 422,
                                    "training_too_large", words)
    assert "exceeds the limit of 100,000 (MAX_TRAINING_WORK)" in error["message"], error


def test_a_qa_dataset_job_refuses_a_question_too_long_before_queueing(migrated_client, sent):
    """A dataset classify job reads every question before it is queued: one surely too long for the model's windows
    is a 422 naming its row (here the 300th, past any chunk of 256), as inline questions and training are."""
    client = migrated_client
    rows = [{"question": f"where did Bob fly {i} ?", "context": CONTEXT} for i in range(299)]
    dataset = upload(client, jsonl(*rows, {"question": LONG_QUESTION, "context": CONTEXT}), "ask.jsonl")
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": qa_model(), "dataset_id": dataset}),
                         422, "question_too_long")
    assert error["message"].startswith("row 300: the question has at least 200 tokens: with max_length 64 and "
                                       "doc_stride 16"), error
    # other column names, given by the request: read from them
    renamed = upload(client, jsonl({"q": LONG_QUESTION, "c": CONTEXT}), "renamed.jsonl")
    error = assert_error(client.post("/api/v1/jobs/classify", json={
        "model_id": qa_model(), "dataset_id": renamed, "text_column": "q", "text_pair_column": "c"}), 422,
        "question_too_long")
    assert error["message"].startswith("row 1: the question"), error
    assert count(Job) == 0 and sent == []
    good = upload(client, jsonl(*rows), "good.jsonl")
    assert client.post("/api/v1/jobs/classify", json={"model_id": qa_model(), "dataset_id": good}).status_code == 202


def test_a_pretty_printed_squad_file_uploads_and_trains(migrated_client, sent):
    """``json.dumps(indent=2)`` of a SQuAD file: the nested shape is told from the whole file (one row, its ``data``
    flattened into questions), so training is accepted; JSON Lines still read one row a line."""
    client = migrated_client
    squad = {"version": "v2.0", "data": [{"title": "trip", "paragraphs": [
        _paragraph(), _paragraph(qas=[{"id": "q2", "question": "who flew?", "answers": [
            {"text": "Bob", "answer_start": 0}]}, {"id": "q3", "question": "what did Bob eat?", "answers": [],
                                                   "is_impossible": True}])]}]}
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(json.dumps(squad, indent=2).encode()),
                                                              "train-v2.0.json")}, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["format"], body["rows"], body["columns"]) == ("jsonl", 1, ["version", "data"])
    accepted = client.post("/api/v1/jobs/train", json={"dataset_id": body["id"], **QA_TRAIN})
    assert accepted.status_code == 202, accepted.get_json()
    assert len(sent) == 1
    lines = client.post("/api/v1/datasets", data={"file": (io.BytesIO(jsonl(*GOOD)), "qa.json")},
                        content_type="multipart/form-data")
    assert lines.status_code == 201 and lines.get_json()["rows"] == 2
    error = assert_error(client.post("/api/v1/datasets", data={"file": (io.BytesIO(
        json.dumps(squad, indent=2).encode() + b"\n" + jsonl(*GOOD)), "two.json")}, content_type="multipart/form-data"),
        400, "invalid_jsonl")
    assert "must be the whole file" in error["message"], error


def test_a_qa_model_evaluates_on_a_dataset_of_other_column_names(migrated_client, sent):
    """EvaluateRequest's context_column / question_column / answers_column read a dataset whose columns are not the
    model's; a model of a task type that reads no such column refuses them (422 invalid_columns), and a missing one
    is named."""
    client = migrated_client
    renamed = [{"query": r["question"], "passage": r["context"], "gold": r["answers"]} for r in GOOD]
    dataset = upload(client, jsonl(*renamed), "renamed.jsonl")
    qa = qa_model()
    body = {"model_id": qa, "dataset_id": dataset, "context_column": "passage", "question_column": "query",
            "answers_column": "gold"}
    accepted = client.post("/api/v1/jobs/evaluate", json=body)
    assert accepted.status_code == 202, accepted.get_json()
    params = client.get(f"/api/v1/jobs/{accepted.get_json()['id']}").get_json()["params"]
    assert (params["context_column"], params["question_column"], params["answers_column"]) == (
        "passage", "query", "gold")
    assert len(sent) == 1
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={**body, "answers_column": "answers"}), 422,
                         "unknown_column")
    assert "'answers'" in error["message"], error
    text_model = f.make_model(name="plain", params={"text_column": "text", "label_column": "label",
                                                    "label_columns": ["label"]})
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={
        "model_id": text_model, "dataset_id": dataset, "question_column": "query"}), 422, "invalid_columns")
    assert "question_column do(es) not apply to model" in error["message"], error
    assert count(Job) == 1 and len(sent) == 1
