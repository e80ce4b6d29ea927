"""The token-classification task type: its request, its training rows, its stored results, filters and exports."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from core import task_types
from core.datasets import DatasetError, check_training_columns, open_rows, scan_upload
from core.options import TrainRequest
from core.task_types.token_classification import TokenExport, result_labels

TOKEN = "token-classification"


def _request(**body):
    return TrainRequest.model_validate({"dataset_id": 1, "task_type": TOKEN, **body})


def test_request_defaults_and_refusals():
    request = _request()
    assert (request.tokens_column, request.tags_column, request.label_columns) == ("tokens", "tags", ["tags"])
    assert request.metric == "f1" and request.text_columns() == ["tokens"]
    assert TrainRequest.model_validate(request.model_dump(mode="json")) == request  # a stored request reads back
    for bad, words in [({"multi_label": True}, "multi_label applies"), ({"family": "multitask"}, "families"),
                       ({"text_pair_column": "text"}, "text_pair_column does not apply"), ({"stride": 126}, "stride"),
                       ({"label_columns": ["a", "b"]}, "tags_column"), ({"metric": "macro_f1"}, "metric"),
                       ({"tokens_column": "x", "tags_column": "x"}, "must differ"),
                       ({"text_normalization": "social"}, "text_normalization applies")]:
        with pytest.raises(ValidationError, match=words):
            _request(**bad)
    with pytest.raises(ValidationError, match="stride applies"):
        TrainRequest.model_validate({"dataset_id": 1, "text_column": "t", "label_column": "l", "stride": 8})


def _rows(*sentences):
    return [{"tokens": json.dumps(tokens), "tags": json.dumps(tags)} for tokens, tags in sentences]


def _check(rows, **known):
    stream = open_rows(("\n".join(json.dumps(r) for r in rows) + "\n").encode(), "jsonl")
    return check_training_columns(stream, _request(), **known)


def test_training_rows_are_counted_per_tag():
    counts = _check(_rows((["New", "York"], ["B-LOC", "I-LOC"]), (["hi"], ["O"])))
    assert counts == {"tags": {"B-LOC": 1, "I-LOC": 1, "O": 1}}


@pytest.mark.parametrize("tokens, tags, code", [
    (["a", "b"], ["O"], "tokens_tags_mismatch"),
    ([], [], "empty_sentence"),
    (["a", 1], ["O", "O"], "invalid_tokens"),
    ("a b", ["O"], "invalid_tokens"),
    (["a\x00"], ["O"], "invalid_tokens"),
    (["a"], ["B-" + "x" * 200], "invalid_tag"),
])
def test_bad_training_rows_are_422(tokens, tags, code):
    with pytest.raises(DatasetError) as error:
        _check([{"tokens": json.dumps(tokens), "tags": json.dumps(tags)}, *_rows((["x"], ["B-A"]))])
    assert (error.value.code, error.value.status) == (code, 422)


def test_a_tag_set_of_one_tag_and_unknown_validation_tags_are_refused():
    with pytest.raises(DatasetError) as error:
        _check(_rows((["a"], ["O"]), (["b"], ["O"])))
    assert error.value.code == "too_few_classes"
    with pytest.raises(DatasetError) as error:
        _check(_rows((["a"], ["B-X"])), known={"tags": {"O", "B-PER"}})
    assert error.value.code == "unknown_labels"


def test_a_conll_upload_trains_as_is():
    scan = scan_upload(io.BytesIO(b"Empire\tB-LOC\nState\tI-LOC\n\nhi\tO\n"), "x.conll")
    counts = check_training_columns(open_rows(io.BytesIO(b"Empire\tB-LOC\nState\tI-LOC\n\nhi\tO\n"), scan.format),
                                    _request())
    assert counts["tags"] == {"B-LOC": 1, "I-LOC": 1, "O": 1}


ENTITIES = {"entities": [{"entity_group": "person", "score": 0.9, "word": "Bob", "start": 0, "end": 3},
                         {"entity_group": "location", "score": 0.7, "word": "Paris", "start": 12, "end": 17}]}
TAGGED = {"tokens": ["Bob", "in", "New", "York"], "tags": ["B-PER", "O", "B-LOC", "I-LOC"], "scores": [0.9, 0.8, 0.7, 0.6]}


def test_stored_columns_filters_and_fields():
    kind = task_types.get(TOKEN)
    columns = kind.prediction_columns(ENTITIES)
    assert columns["result"] == ENTITIES and columns["labels"] == ["location", "person"]
    assert (columns["label"], columns["score"], columns["scores"]) == ("location", 0.9, {})
    assert kind.prediction_columns({"entities": []})["label"] == ""
    assert result_labels(TAGGED) == ["LOC", "PER"]
    assert result_labels({"tokens": ["a", "b"], "tags": ["NN", "VB"], "scores": [1, 1]}) == ["NN", "VB"]
    row = SimpleNamespace(index=0, row_id=None, text="Bob met me in Paris", text_pair=None, **columns)
    assert kind.prediction_fields(row) == ENTITIES


def test_exports_one_object_per_row_and_one_csv_line_per_entity():
    text = SimpleNamespace(index=3, row_id="r3", text="Bob met me in Paris", result=ENTITIES)
    layout = TokenExport(tokens_input=False, with_id=True)
    assert layout.row(text) == {"index": 3, "id": "r3", "text": text.text, "entities": ENTITIES["entities"]}
    assert [line["word"] for line in layout.csv_rows(text)] == ["Bob", "Paris"]
    assert layout.csv_columns == ["index", "id", "entity_group", "start", "end", "word", "score"]
    tokens = SimpleNamespace(index=0, row_id=None, text="Bob in New York", result=TAGGED)
    layout = TokenExport(tokens_input=True)
    assert layout.row(tokens)["tags"] == TAGGED["tags"]
    assert [(line["token"], line["tag"]) for line in layout.csv_rows(tokens)][2] == ("New", "B-LOC")


def test_conll_lines_of_tokens_and_of_raw_texts():
    layout = TokenExport(tokens_input=True)
    tokens = SimpleNamespace(index=0, row_id=None, text="Bob in New York", result=TAGGED)
    assert "".join(layout.conll_lines(tokens)) == "Bob\tB-PER\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n\n"
    text = SimpleNamespace(index=0, row_id=None, text="Bob  met me in Paris!", result={"entities": [
        {"entity_group": "person", "score": 0.9, "word": "Bob", "start": 0, "end": 3},
        {"entity_group": "location", "score": 0.7, "word": "Paris", "start": 15, "end": 20}]})
    assert "".join(TokenExport(tokens_input=False).conll_lines(text)) == \
        "Bob\tB-person\nmet\tO\nme\tO\nin\tO\nParis!\tB-location\n\n"


def test_evaluation_plan_and_metrics_of_a_token_model():
    from core.evaluation import EvaluationError
    from ml.token_evaluation import evaluate_sentences

    kind = task_types.get(TOKEN)
    params = {"task_type": TOKEN, "tokens_column": "words", "tags_column": "ner"}
    plan = kind.plan_evaluation("bert", {"ner": ["O", "B-PER", "I-PER"]}, params)
    assert plan.columns == ["words", "ner"] and plan.to_params()["task_type"] == TOKEN
    rows = [{"words": json.dumps(["Bob", "Smith", "ran"]), "ner": json.dumps(["B-PER", "I-PER", "O"])},
            {"words": json.dumps(["Ann", "too"]), "ner": json.dumps(["B-PER", "O"])}]
    plan.check_labels(rows)
    with pytest.raises(EvaluationError) as error:
        plan.check_labels([{"words": json.dumps(["Rome"]), "ner": json.dumps(["B-LOC"])}])
    assert error.value.code == "unknown_labels" and error.value.labels == ["B-LOC"]
    with pytest.raises(EvaluationError):
        kind.plan_evaluation("bert", {"ner": ["O", "B-PER"]}, params, text_pair_column="x")

    answers = {"Bob": ["B-PER", "O", "O"], "Ann": ["B-PER", "O"]}  # the first entity's boundary is wrong
    metrics = evaluate_sentences(rows, plan, lambda sentences: [{"tags": answers[s[0]]} for s in sentences])
    assert (metrics["precision"], metrics["recall"]) == (0.5, 0.5) and metrics["examples"] == 2
    assert metrics["per_type"]["PER"]["support"] == 2 and metrics["accuracy"] == pytest.approx(4 / 5)


def _span_check(rows, **known):
    request = _request(spans_column="entities")
    stream = open_rows(("\n".join(json.dumps(r) for r in rows) + "\n").encode(), "jsonl")
    return check_training_columns(stream, request, **known)


def test_span_rows_jsonl_and_label_studio():
    rows = [{"text": "Bob lives in Paris", "entities": [{"start": 0, "end": 3, "label": "PER"},
                                                           {"start": 13, "end": 18, "label": "LOC"}]},
            {"text": "nothing here", "entities": []}]
    assert _span_check(rows) == {"entities": {"PER": 1, "LOC": 1}}
    studio = [{"data": {"text": "Ann met Bob"}, "annotations": [{"result": [
        {"value": {"start": 0, "end": 3, "text": "Ann", "labels": ["PER"]}},
        {"value": {"start": 8, "end": 11, "text": "Bob", "labels": ["PER"]}}]}]}]
    request = _request(text_column="data", spans_column="annotations")
    stream = open_rows(json.dumps(studio).encode(), "json")
    assert check_training_columns(stream, request) == {"annotations": {"PER": 2}}


@pytest.mark.parametrize("spans, code", [
    ([{"start": 0, "end": 99, "label": "PER"}], "invalid_spans"),
    ([{"start": -1, "end": 2, "label": "PER"}], "invalid_spans"),
    ([{"start": 2, "end": 2, "label": "PER"}], "invalid_spans"),
    ([{"start": 0, "end": 3, "labels": "PER"}], "invalid_spans"),
    ([{"start": "0", "end": 3, "label": "PER"}], "invalid_spans"),
    ([{"start": 0, "end": 5, "label": "PER"}, {"start": 4, "end": 8, "label": "LOC"}], "overlapping_spans"),
    ({"start": 0}, "invalid_spans"),
])
def test_bad_spans_are_422(spans, code):
    with pytest.raises(DatasetError) as error:
        _span_check([{"text": "Bob lives in Paris", "entities": spans}])
    assert (error.value.code, error.value.status) == (code, 422)


def test_span_requests_and_no_entity_at_all():
    with pytest.raises(DatasetError) as error:
        _span_check([{"text": "a", "entities": []}])
    assert error.value.code == "too_few_classes"
    with pytest.raises(ValidationError, match="not both"):
        _request(spans_column="entities", tags_column="tags")
    with pytest.raises(ValidationError, match="text_column goes with spans_column"):
        _request(text_column="text")


def test_json_nested_deeper_than_the_parser_goes_is_a_422_not_a_crash():
    from core.task_types.token_classification import parse_list, span_text

    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(DatasetError) as raised:
        parse_list(deep, "tokens", 3)
    assert raised.value.status == 422 and "row 3" in raised.value.message
    deep_object = '{"a": ' * 5000 + "1" + "}" * 5000
    assert span_text(deep_object) == deep_object  # not JSON it can read: the cell is the text
