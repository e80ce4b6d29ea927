"""The multiple-choice task type: its request, its dataset layouts and rows, its metrics, stored results and exports."""
from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from core import task_types
from core.datasets import DatasetError, check_column_names, check_training_columns, read_rows
from core.options import TrainRequest
from core.task_types.multiple_choice import (
    ChoiceExport,
    choice_metrics,
    config_layout,
    ending_columns,
    resolve_layout,
    result_of,
)

MC = "multiple-choice"


def _request(**body):
    return TrainRequest.model_validate({"dataset_id": 1, "task_type": MC, **body})


def _csv(header, *rows) -> bytes:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def test_request_defaults_and_refusals():
    request = _request()
    assert (request.context_column, request.label_column, request.label_columns) == ("context", "label", ["label"])
    assert request.metric == "accuracy" and request.text_columns() == ["context"]
    assert TrainRequest.model_validate(request.model_dump(mode="json")) == request  # a stored request reads back
    named = _request(context_column="sent1", question_column="sent2", choice_columns=["a", "b", "c"])
    assert named.text_columns() == ["sent1", "sent2", "a", "b", "c"]
    for bad, words in [({"family": "bert_lstm"}, "families"), ({"text_column": "t"}, "text_column does not apply"),
                       ({"choice_columns": ["a", "b"], "choices_column": "c"}, "not both"),
                       ({"choice_columns": ["a"]}, "at least 2"), ({"choice_columns": ["a", "a"]}, "repeat"),
                       ({"class_weights": "balanced"}, "class_weights"), ({"metric": "f1"}, "metric"),
                       ({"label_columns": ["a", "b"]}, "one label_column"), ({"stride": 8}, "stride applies")]:
        with pytest.raises(ValidationError, match=words):
            _request(**bad)
    for field in ("context_column", "choices_column"):  # another task type refuses the multiple-choice fields
        with pytest.raises(ValidationError, match=f"{field} does not apply"):
            TrainRequest.model_validate({"dataset_id": 1, "text_column": "t", "label_column": "l", field: "x"})


def test_layout_defaults_swag_columns_and_a_list_column():
    assert ending_columns(["ending10", "sent1", "ending2", "ending0", "endings"]) == ["ending0", "ending2", "ending10"]
    swag = resolve_layout(["context", "question", "ending0", "ending1", "label"])
    assert (swag.question_column, swag.choice_columns) == ("question", ("ending0", "ending1"))
    assert resolve_layout(["context", "ending0", "ending1", "label"]).question_column is None  # absent: none
    listed = resolve_layout(["ctx", "opts", "answer"], context_column="ctx", choices_column="opts",
                            label_column="answer")
    assert listed.columns == ["ctx", "opts", "answer"]
    example = listed.example({"ctx": "c", "opts": json.dumps(["x", "y", "z"]), "answer": "z"}, 1)
    assert (example.choices, example.label) == (["x", "y", "z"], 2)
    for columns, kwargs, code in [(["context", "label"], {}, "invalid_columns"),
                                  (["context", "ending0", "ending1"], {}, "unknown_column"),
                                  (["context", "ending0", "ending1", "label"], {"question_column": "ending0"},
                                   "invalid_columns")]:
        with pytest.raises(DatasetError) as error:
            resolve_layout(columns, **kwargs)
        assert error.value.code == code


def test_rows_vary_in_choices_and_bad_rows_are_422():
    header = ["context", "ending0", "ending1", "ending2", "label"]
    data = read_rows(_csv(header, ["a", "x", "y", "z", "2"], ["b", "x", "y", "", "y"], ["c", "p", "q", "", "0"]))
    request = _request()
    check_column_names(data.columns, request)
    assert check_training_columns(data, request) == {"choice": {"2": 1, "1": 1, "0": 1}}
    assert config_layout(header, request).label({"label": "1.0"}, ["x", "y"], 1) == 1  # as pandas writes ints
    layout = config_layout(header, request)
    assert layout.example(data.rows[1], 2).choices == ["x", "y"]  # trailing empty cells: fewer choices
    bad_rows = [(["a", "x", "", "z", "0"], "invalid_choices"), (["a", "x", "", "", "0"], "too_few_choices"),
                (["a", "x", "y", "z", "3"], "invalid_label"), (["a", "x", "y", "z", "-1"], "invalid_label"),
                (["a", "x", "y", "z", "w"], "invalid_label"), (["a", "x", "x", "z", "x"], "invalid_label"),
                (["a", "x", "y", "z", ""], "invalid_label")]
    for row, code in bad_rows:
        with pytest.raises(DatasetError) as error:
            check_training_columns(read_rows(_csv(header, row)), request)
        assert error.value.code == code and error.value.status == 422, row
    listed = _request(choices_column="choices")
    for cell in ["not json", json.dumps("x"), json.dumps(["only one"]), json.dumps(["a", 3]), json.dumps(["a", " "])]:
        with pytest.raises(DatasetError):
            check_training_columns(read_rows(_csv(["context", "choices", "label"], ["c", cell, "0"])), listed)


def test_choice_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(3)
    for _ in range(20):
        gold = [rng.randrange(4) for _ in range(30)]
        pred = [g if rng.random() < 0.6 else rng.randrange(5) for g in gold]
        metrics = choice_metrics(gold, pred)
        assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, pred))
        assert metrics["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
    hand = choice_metrics([0, 1, 1, 2], [0, 1, 2, 2])  # 0: f1 1; 1: p 1 r .5 f1 2/3; 2: p .5 r 1 f1 2/3
    assert hand["accuracy"] == 0.75 and hand["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert choice_metrics([], [])["accuracy"] is None


def test_prediction_storage_fields_and_exports():
    kind = task_types.get(MC)
    assert MC in task_types.names() and kind.pipeline_tag == "multiple-choice"
    result = result_of(["walks away", "sits down"], [0.25, 0.75])
    assert result == {"choice_index": 1, "choice": "sits down", "scores": [0.25, 0.75],
                      "choices": ["walks away", "sits down"]}
    columns = kind.prediction_columns(result)
    assert (columns["label"], columns["score"], columns["scores"]) == ("1", 0.75, {"0": 0.25, "1": 0.75})
    stored = SimpleNamespace(index=4, row_id="r4", text="A man stands.", text_pair="He", result=columns["result"])
    assert kind.prediction_fields(stored) == result
    layout = kind.export_layout(model_tasks={"choice": ["0", "1"]}, model_params={}, first=stored, with_id=True,
                                with_pair=True)
    assert isinstance(layout, ChoiceExport)
    assert layout.row(stored) == {"index": 4, "id": "r4", "text": "A man stands.", "question": "He",
                                  "choices": ["walks away", "sits down"], "choice_index": 1, "choice": "sits down",
                                  "score": 0.75, "scores": [0.25, 0.75]}
    line = layout.csv_rows(stored)[0]
    assert set(line) == set(layout.csv_columns) and json.loads(line["choices"]) == ["walks away", "sits down"]


def test_evaluation_plan_defaults_to_the_model_columns():
    from core.evaluation import EvaluationError

    kind = task_types.get(MC)
    params = _request(context_column="sent1", choices_column="opts").model_dump(mode="json")
    plan = kind.plan_evaluation("bert", {"choice": ["0", "1"]}, params, dataset_columns=["sent1", "opts", "label", "x"])
    assert plan.columns == ["sent1", "opts", "label"]
    back = type(plan).from_params(json.loads(json.dumps(plan.to_params())))
    assert back == plan and plan.to_params()["task_type"] == MC
    plan.check_labels([{"sent1": "c", "opts": json.dumps(["a", "b"]), "label": "b"}])
    with pytest.raises(EvaluationError) as error:
        plan.check_labels([{"sent1": "c", "opts": json.dumps(["a", "b"]), "label": "5"}])
    assert error.value.code == "invalid_label"
    with pytest.raises(EvaluationError) as error:  # a dataset of another shape: no choices found
        kind.plan_evaluation("bert", {"choice": ["0", "1"]}, {"context_column": "context"},
                             dataset_columns=["context", "label"])
    assert error.value.code == "invalid_columns"


@pytest.mark.parametrize(("cell", "shown"), [
    ("9" * 5000, "label 99999999999999999999... (5000 digits) is out of range"),  # past int()'s 4300 digits
    ("-" + "0" * 4999 + "1", "label -1 is out of range"),  # leading zeros are not digits of the position
    ("1" + "0" * 100, "label 10000000000000000000... (101 digits) is out of range"),
])
def test_a_label_of_many_digits_is_out_of_range_without_converting_it(cell, shown):
    from core.task_types.multiple_choice import label_index

    with pytest.raises(DatasetError) as raised:
        label_index(cell, ["a", "b"], 3)
    assert raised.value.code == "invalid_label" and f"row 3: {shown}" in raised.value.message
    assert label_index("0" * 5000 + "1", ["a", "b"], 3) == 1


def test_a_numeric_label_among_numeric_choices_is_read_or_refused_never_guessed():
    """Choices that are numbers: a label naming a position that holds its own text, or naming no position but one
    choice's text, has one reading; one that is a position and another choice's text is refused with both."""
    from core.task_types.multiple_choice import label_index

    assert label_index("1", ["0", "1", "2"], 4) == 1  # position 1 is the choice "1": the same reading
    assert label_index("2", ["a", "b", "c"], 4) == 2  # no choice is a number: a position
    assert label_index("20", ["10", "20", "30"], 4) == 1  # no position 20: the choice "20"
    with pytest.raises(DatasetError) as caught:
        label_index("1", ["2", "0", "1"], 4)
    assert caught.value.code == "ambiguous_label" and caught.value.message.startswith(
        "row 4: label '1' is ambiguous: it is position 1 (choice '0') and the text of the choice at position 2")
    with pytest.raises(DatasetError) as caught:
        label_index("1.0", ["x", "y", "1.0"], 4)
    assert caught.value.code == "ambiguous_label"
