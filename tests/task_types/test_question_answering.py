"""Question answering, the torch-free part: reading datasets (every shape), SQuAD metrics, request fields, results."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from core import task_types
from core.datasets import DatasetError, check_column_names
from core.options import TrainRequest
from core.task_types.question_answering import (
    Columns, Example, exact_match, f1_score, normalize_answer, read_examples, squad_metrics)

CONTEXT = "The Eiffel Tower is in Paris. It was built in 1889."


def answers(*pairs):
    return json.dumps({"text": [t for t, _ in pairs], "answer_start": [s for _, s in pairs]})


# ---------------------------------------------------------------------------------------------- reading


def test_rows_with_answers_objects_lists_and_unanswerable():
    rows = [
        {"context": CONTEXT, "question": "Where is it?", "answers": answers(("Paris", 23), ("in Paris", 20))},
        {"context": CONTEXT, "question": "When?", "answers": json.dumps([{"text": "1889", "answer_start": 46}])},
        {"context": CONTEXT, "question": "Who painted it?", "answers": json.dumps({"text": [], "answer_start": []})},
        {"context": CONTEXT, "question": "How tall?", "answers": ""},
    ]
    examples = list(read_examples(rows, Columns()))
    assert examples[0].answers == (("Paris", 23), ("in Paris", 20))
    assert examples[1].answers == (("1889", 46),)
    assert [e.answerable for e in examples] == [True, True, False, False]


def test_csv_answer_text_and_start_columns_and_named_columns():
    rows = [{"ctx": CONTEXT, "q": "Where?", "answer_text": "Paris", "answer_start": "23"},
            {"ctx": CONTEXT, "q": "Who?", "answer_text": "", "answer_start": ""}]
    columns = Columns(context="ctx", question="q", answers="answers")
    examples = list(read_examples(rows, columns))
    assert examples[0].answers == (("Paris", 23),) and not examples[1].answerable
    assert columns.in_dataset(["ctx", "q", "answer_text", "answer_start"]) == (["q", "ctx"],
                                                                               ["answer_text", "answer_start"])


def test_nested_squad_file_is_flattened():
    squad = [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "a1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 23}]},
        {"id": "a2", "question": "Who?", "answers": [], "is_impossible": True}]}]}]
    examples = list(read_examples([{"data": json.dumps(squad), "version": "v2.0"}], Columns()))
    assert examples == [Example("Where?", CONTEXT, (("Paris", 23),), "a1"), Example("Who?", CONTEXT, (), "a2")]
    assert Columns().in_dataset(["data", "version"]) == ([], ["data"])


@pytest.mark.parametrize("cell, code", [
    (answers(("Paris", 22)), "answer_mismatch"),  # off by one
    (answers(("Paris", -1)), "answer_out_of_range"),
    (answers(("Paris", 1000)), "answer_out_of_range"),
    (json.dumps({"text": ["Paris"], "answer_start": ["x"]}), "invalid_answers"),
    (json.dumps({"text": ["Paris", "1889"], "answer_start": [23]}), "invalid_answers"),
    ("not json", "invalid_answers"),
    (json.dumps({"text": [""], "answer_start": [0]}), "invalid_answers"),
])
def test_bad_answers_are_422(cell, code):
    with pytest.raises(DatasetError) as caught:
        list(read_examples([{"context": CONTEXT, "question": "Where?", "answers": cell}], Columns()))
    assert caught.value.status == 422 and caught.value.code == code


def test_nul_and_empty_question_are_422():
    for row in ({"context": CONTEXT, "question": "", "answers": ""},
                {"context": CONTEXT + "\x00", "question": "q", "answers": ""}):
        with pytest.raises(DatasetError):
            list(read_examples([row], Columns()))


# ---------------------------------------------------------------------------------------------- metrics


def test_normalization_hand_checked():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("  an Apple, a day ") == "apple day"
    assert normalize_answer("Theatre") == "theatre"  # an article only as a whole word


def test_exact_match_and_f1_hand_checked():
    assert exact_match("the Paris", ["Paris"]) == 1.0
    assert exact_match("Paris France", ["Paris"]) == 0.0
    # "paris france" vs "paris": precision 1/2, recall 1 -> F1 2/3; best over golds picks "in paris france"
    assert f1_score("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    assert f1_score("Paris France", ["Paris", "in Paris, France"]) == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert f1_score("", []) == 1.0 and exact_match("", []) == 1.0  # unanswerable, answered with nothing
    assert f1_score("Paris", []) == 0.0 and f1_score("", ["Paris"]) == 0.0


def test_squad_metrics_breakdown():
    metrics = squad_metrics(["Paris", "1889 AD", "", "Rome"], [["Paris"], ["1889"], [], []])
    assert metrics["exact_match"] == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert metrics["f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert metrics["has_answer_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["has_answer_exact"] == 0.5 and metrics["no_answer_accuracy"] == 0.5
    assert (metrics["has_answer"], metrics["no_answer"]) == (2, 2)
    assert squad_metrics(["Paris"], [["Paris"]])["no_answer_accuracy"] is None


# ---------------------------------------------------------------------------------------------- requests


def test_request_defaults_and_bad_combinations():
    request = TrainRequest(dataset_id=1, task_type="question-answering")
    assert (request.max_length, request.doc_stride, request.metric) == (384, 128, "f1")
    assert request.label_columns == ["answers"] and request.context_column == "context"
    assert TrainRequest(dataset_id=1, task_type="question-answering", max_length=128, doc_stride=64).max_length == 128
    # the task types' own defaults (TaskType.training_defaults) apply only to them, and only when not given
    assert TrainRequest(dataset_id=1, task_type="question-answering").batch_size == 32
    assert TrainRequest(dataset_id=1, task_type="multiple-choice").batch_size == 16
    assert TrainRequest(dataset_id=1, task_type="multiple-choice", batch_size=32).config().batch_size == 32
    assert TrainRequest(dataset_id=1, text_column="t", label_column="l").max_length == 128
    # max_length alone: the overlap defaults to a third of it (128 is not less than 128 - 4)
    short = TrainRequest(dataset_id=1, task_type="question-answering", epochs=2, max_length=128)
    assert (short.doc_stride, short.config().doc_stride) == (42, 42)
    for bad in ({"doc_stride": 128, "max_length": 128}, {"text_column": "text"}, {"family": "bert_lstm"},
                {"context_column": "q", "question_column": "q"}, {"label_column": "other"}):
        with pytest.raises(ValidationError):
            TrainRequest(dataset_id=1, task_type="question-answering", **bad)
    with pytest.raises(ValidationError):  # a QA option on another task type
        TrainRequest(dataset_id=1, text_column="t", label_column="l", doc_stride=64)


def test_dataset_columns_checked_before_rows():
    config = TrainRequest(dataset_id=1, task_type="question-answering").config()
    check_column_names(["context", "question", "answers"], config)
    check_column_names(["data", "version"], config)
    check_column_names(["context", "question", "answer_text", "answer_start"], config)
    with pytest.raises(DatasetError) as caught:
        check_column_names(["context", "text"], config)
    assert caught.value.code == "unknown_column"


def test_check_training_rows_counts_and_needs_an_answer():
    kind = task_types.get("question-answering")
    config = TrainRequest(dataset_id=1, task_type="question-answering").config()
    rows = [{"context": CONTEXT, "question": "Where?", "answers": answers(("Paris", 23))},
            {"context": CONTEXT, "question": "Who?", "answers": ""}]
    assert kind.check_training_rows(rows, config) == {"answers": {"answer": 1, "no_answer": 1}}
    with pytest.raises(DatasetError) as caught:
        kind.check_training_rows(rows[1:], config)
    assert caught.value.code == "too_few_classes"


# ---------------------------------------------------------------------------------------------- results


def test_prediction_columns_fields_and_export():
    kind = task_types.get("question-answering")
    result = {"question": "Where?", "answer": "Paris", "score": 0.9, "start": 23, "end": 28}
    columns = kind.prediction_columns(result)
    assert columns["label"] == "answered" and columns["score"] == 0.9 and columns["result"] == result
    assert kind.prediction_columns({**result, "answer": "", "start": 0, "end": 0})["label"] == "no_answer"
    stored = SimpleNamespace(index=0, row_id="r1", text="Where?", text_pair=CONTEXT, result=columns["result"])
    assert kind.prediction_fields(stored) == result
    layout = kind.export_layout(model_tasks=None, model_params={}, first=stored, with_id=True, with_pair=True)
    assert layout.columns == ["index", "id", "question", "context", "answer", "score", "start", "end"]
    assert layout.row(stored) == {"index": 0, "id": "r1", "question": "Where?", "context": CONTEXT,
                                  "answer": "Paris", "score": 0.9, "start": 23, "end": 28}
    assert CONTEXT[23:28] == "Paris"


def test_evaluation_plan():
    kind = task_types.get("question-answering")
    plan = kind.plan_evaluation("bert", {"answers": ["start", "end"]}, {"context_column": "ctx"})
    assert (plan.context_column, plan.question_column, plan.answers_column) == ("ctx", "question", "answers")
    assert type(plan).from_params(plan.to_params()) == plan
    assert plan.columns_in(["ctx", "question", "answers"]) == ["question", "ctx", "answers"]
    from core.evaluation import EvaluationError

    with pytest.raises(EvaluationError):
        plan.columns_in(["text", "label"])
    with pytest.raises(EvaluationError):
        kind.plan_evaluation("bert", {}, {}, text_column="text")


def test_dataset_mismatch():
    kind = task_types.get("question-answering")
    assert kind.dataset_mismatch(["context", "question", "answers"], set()) is None
    assert kind.dataset_mismatch(["data", "version"], set()) is None
    assert kind.dataset_mismatch(["ctx", "q", "answers"], set(), model_params={"context_column": "ctx",
                                                                               "question_column": "q"}) is None
    assert "token lists" in kind.dataset_mismatch(["context", "question", "answers"], {"context"})
    assert "no 'question'" in kind.dataset_mismatch(["text", "label"], set())
    assert "no 'question'" in kind.dataset_mismatch(["text", "label"], set(), used=["question", "context", "answers"])
    assert kind.dataset_mismatch(["question", "context", "gold"], set(), used=["question", "context", "answers"]) \
        is None  # the missing answers column is named by the caller


def test_gold_answers_that_normalise_to_nothing_do_not_count():
    """The official SQuAD v2 rule: a gold answer of only articles / punctuation is dropped; none left: no answer."""
    from core.task_types.question_answering import exact_match, f1_score

    assert exact_match("", ["the", "Paris"]) == 0.0 and f1_score("", ["the", "Paris"]) == 0.0
    assert exact_match("Paris", ["the", "Paris"]) == 1.0 and f1_score("Paris", ["the", "Paris"]) == 1.0
    assert exact_match("", ["the", "!"]) == 1.0 and f1_score("", ["the", "!"]) == 1.0


def test_an_imported_qa_checkpoint_takes_start_and_end_whatever_id2label_says():
    from core.hf_format import import_labels

    ner_leftover = {"id2label": {"0": "O", "1": "B-PER", "2": "I-PER"}, "num_labels": 3}
    assert import_labels(ner_leftover, "question-answering") == ["start", "end"]
    assert import_labels({"num_labels": 1, "problem_type": "regression"}, "question-answering") == ["start", "end"]


def test_min_tokens_is_the_documented_lower_bound():
    """The regular expression counts exactly what the rule in its docstring says (a character loop), on random
    strings of every kind of character BERT treats differently: whitespace, ASCII punctuation, letters and digits
    of any script, symbols, accents, controls."""
    import random
    import string
    import unicodedata

    from core.task_types.question_answering import min_tokens

    def by_hand(text: str) -> int:
        count, in_word = 0, False
        for char in text:
            if char in string.punctuation:
                count, in_word = count + 1, False
            elif char in "\t\n\r" or unicodedata.category(char) == "Zs":
                in_word = False
            elif char.isalnum() and not in_word:
                count, in_word = count + 1, True
        return count

    alphabet = list("ab1_ \t\n\r\v\f.,!?-'\"\u00a0\u2003\u3000\u00e9\u20ac\u0301\x00\u200b\u4e2d\u0663\u00b2\u2160")
    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert min_tokens(text) == by_hand(text), repr(text)


def test_the_training_windows_of_a_long_context_and_of_many_questions():
    from core.task_types.question_answering import min_training_windows, min_windows

    assert min_windows(2, 59, 64, 16) == 1 and min_windows(2, 60, 64, 16) == 2  # room 59, then 43 more a window
    assert min_windows(2, 200_000, 64, 16) == 1 + -(-(200_000 - 59) // 43)
    assert min_windows(60, 10_000, 64, 16) == 1  # no room: the question is refused by its own check
    paragraph = Example("who?", CONTEXT, (("1889", 46),))
    assert min_training_windows([paragraph] * 3000, 64, 16) == 3000
