"""Span data (raw text + character spans) on its way to a token model: the tokenizer's words with their offsets,
spans snapped to word boundaries or dropped (and counted), Label Studio rows, the training task's words, tags and
``data_report``, and evaluation on span rows."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from core.evaluation import EvaluationError
from core.task_types import get
from core.task_types.token_classification import TokenEvaluationPlan
from ml.config import TrainingDataError
from ml.token_data import span_sentence, text_words
from ml.token_evaluation import evaluate_sentences
from ml.token_training import TokenTask, read_span_texts
from tests.ml.test_token_training import token_config

TEXT = "Carol Smith-Jones flew to  Lima, today."


def span_config(**overrides) -> SimpleNamespace:
    return token_config(tokens_column=None, tags_column=None, text_column="text", spans_column="entities",
                        max_length=16, stride=4, **overrides)


def span_rows(n: int = 4) -> list[dict[str, str]]:
    """``n`` texts: a person (the second one misaligned: it ends inside "Smith"), a place, and a span over spaces."""
    rows = []
    for i in range(n):
        entities = [{"start": 0, "end": 11 if i else 9, "label": "person"},
                    {"start": 27, "end": 31, "label": "location"}]
        if i == 0:
            entities.append({"start": 25, "end": 27, "label": "location"})  # the two spaces before "Lima"
        rows.append({"text": TEXT, "entities": json.dumps(entities)})
    return rows


def test_text_words_are_the_pre_tokenizers_with_offsets(tokenizer):
    words = text_words(tokenizer, TEXT)
    assert [w for w, _, _ in words] == ["Carol", "Smith", "-", "Jones", "flew", "to", "Lima", ",", "today", "."]
    assert all(TEXT[start:end] == word for word, start, end in words)


def test_text_words_without_a_fast_tokenizer_splits_as_bert_does():
    words = text_words(SimpleNamespace(), "  Lima, today ")
    assert words == [("Lima", 2, 6), (",", 6, 7), ("today", 8, 13)]


def test_spans_are_snapped_to_words_or_dropped_and_counted(tokenizer):
    spans = [(0, 9, "person"),  # ends inside "Smith": snapped to "Carol Smith"
             (12, 17, "person"),  # "Jones", exact
             (25, 27, "location"),  # only spaces: dropped
             (27, 31, "location")]  # "Lima", exact
    words, tags, alignment = span_sentence(tokenizer, TEXT, spans)
    assert words[:7] == ["Carol", "Smith", "-", "Jones", "flew", "to", "Lima"]
    assert tags == ["B-person", "I-person", "O", "B-person", "O", "O", "B-location", "O", "O", "O"]
    assert (alignment.snapped, alignment.dropped) == (1, 1)


def test_a_span_overlapping_an_earlier_one_once_snapped_is_dropped(tokenizer):
    # "Smi" and "ith" both snap to "Smith": the second is dropped
    _, tags, alignment = span_sentence(tokenizer, TEXT, [(6, 9, "person"), (8, 11, "location")])
    assert tags[:2] == ["O", "B-person"] and "B-location" not in tags
    assert (alignment.snapped, alignment.dropped) == (1, 1)


def test_label_studio_rows_read_as_texts_and_spans():
    row = {"data": json.dumps({"text": TEXT}),
           "annotations": json.dumps([{"result": [{"value": {"start": 27, "end": 31, "labels": ["location"]}},
                                                  {"value": {"start": 0, "end": 5, "labels": ["person"]}}]}])}
    texts = read_span_texts([row, {"data": json.dumps({"text": "  "}), "annotations": "[]"}],
                            SimpleNamespace(text_column="data", spans_column="annotations"))
    assert texts.texts == [TEXT]
    assert texts.spans == [[(0, 5, "person"), (27, 31, "location")]]
    assert texts.skipped == {"empty_sentence": 1} and texts.types() == {"person", "location"}


def test_bad_span_rows_are_training_data_errors():
    config = SimpleNamespace(text_column="text", spans_column="entities")
    with pytest.raises(TrainingDataError, match="outside the text"):
        read_span_texts([{"text": "short", "entities": '[{"start": 0, "end": 50, "label": "x"}]'}], config)
    with pytest.raises(TrainingDataError, match="column 'entities' not found"):
        read_span_texts([{"text": "short"}], config)


def test_token_task_on_span_rows_trains_on_the_tokenizers_words_and_reports_the_spans(tokenizer):
    task = TokenTask(span_rows(10), span_rows(2), span_config())
    assert task.tasks == {"entities": ["O", "B-location", "I-location", "B-person", "I-person"]}
    assert task.scheme == "IOB2" and task.train_sentences == list(range(10)) and task.val_sentences == [10, 11]
    encoded = task.encode(tokenizer, 16)
    assert len(encoded.input_ids) == len(task.windows) and task.val_rows
    assert task.words[0][:2] == ["Carol", "Smith"]
    assert task.tags[0][:2] == ["B-person", "I-person"]  # "Carol Smi" snapped to "Carol Smith"
    summary = task.summary()
    # row 0: the person ends inside "Smith" (snapped), the spaces span is dropped; rows 1-9 align exactly
    assert summary["data_report"] == {"spans": 21, "snapped": 1, "dropped": 1,
                                      "validation": {"spans": 5, "snapped": 1, "dropped": 1}}
    assert summary["sentences"] == {"train": 10, "validation": 2}


def test_span_validation_data_with_an_unknown_type_is_refused():
    other = [{"text": "Lima", "entities": '[{"start": 0, "end": 4, "label": "city"}]'}]
    with pytest.raises(TrainingDataError, match="entity types the training data does not: city"):
        TokenTask(span_rows(10), other, span_config())


def test_span_rows_without_any_span_are_refused():
    with pytest.raises(TrainingDataError, match="holds no entity span"):
        TokenTask([{"text": TEXT, "entities": "[]"}] * 10, None, span_config())


def test_a_span_model_is_evaluated_on_texts_and_spans():
    kind = get("token-classification")
    tags = ["O", "B-location", "I-location", "B-person", "I-person"]
    params = {"task_type": "token-classification", "text_column": "text", "spans_column": "entities"}
    plan = kind.plan_evaluation("bert", {"entities": tags}, params)
    assert plan.columns == ["text", "entities"]
    assert TokenEvaluationPlan.from_params(plan.to_params()) == plan
    renamed = kind.plan_evaluation("bert", {"entities": tags}, params, text_column="body", label_column="gold")
    assert renamed.columns == ["body", "gold"]
    with pytest.raises(EvaluationError) as error:
        plan.check_labels([{"text": "Lima", "entities": '[{"start": 0, "end": 4, "label": "city"}]'}])
    assert error.value.code == "unknown_labels" and error.value.labels == ["city"]
    plan.check_labels(span_rows(2))  # known types pass
    # a model trained on tokens and tags still reads tokens and tags
    assert kind.plan_evaluation("bert", {"ner": tags}, {"tokens_column": "tokens", "tags_column": "ner"}).columns \
        == ["tokens", "ner"]


def test_evaluation_on_span_rows_scores_entities_and_reports_the_spans(tokenizer):
    plan = TokenEvaluationPlan(tags=["O", "B-location", "I-location", "B-person", "I-person"], text_column="text",
                               spans_column="entities")
    seen = []

    def predict(sentences):  # tags every word "O" except "Lima": the location is found, the person missed
        seen.extend(sentences)
        return [{"tags": ["B-location" if w == "Lima" else "O" for w in words]} for words in sentences]

    rows = [*span_rows(2), {"text": " ", "entities": "[]"}]
    metrics = evaluate_sentences(rows, plan, predict, tokenizer=tokenizer)
    assert seen[0] == text_words_only(tokenizer)
    # the span over spaces (row 1's second location) fits no word: a gold entity no prediction can find, so a
    # false negative (support 5, not 4), and the report says so
    assert metrics["examples"] == 2 and metrics["support"] == 5
    assert metrics["per_type"]["location"]["recall"] == 2 / 3 and metrics["per_type"]["location"]["support"] == 3
    assert metrics["per_type"]["person"]["recall"] == 0.0
    assert metrics["precision"] == 1.0 and metrics["recall"] == 2 / 5
    assert metrics["data_report"] == {"spans": 5, "snapped": 1, "dropped": 1, "dropped_types": {"location": 1},
                                      "dropped_scored_as": "false negatives"}
    assert metrics["skipped_rows"] == {"empty_sentence": 1}
    with pytest.raises(ValueError, match="tokenizer"):
        evaluate_sentences(rows, plan, predict)


def text_words_only(tokenizer) -> list[str]:
    return [word for word, _, _ in text_words(tokenizer, TEXT)]


def test_validation_metrics_count_a_dropped_span_as_missed(tokenizer):
    """Training's validation metrics score span data as an evaluate job does: the validation text's span over
    spaces (dropped: no word can carry it) is a false negative, so even gold-perfect predictions recall 4 of 5."""
    from models.base import IGNORE_INDEX

    task = TokenTask(span_rows(10), span_rows(2), span_config())
    encoded = task.encode(tokenizer, 16)
    rows = task.val_rows
    perfect = [[y if y != IGNORE_INDEX else 0 for y in task.windows[i].labels] for i in rows]
    metrics = task.score({"pred": {task.task: perfect}, "task_loss": {task.task: 0.0}}, encoded, rows)[task.task]
    assert metrics["precision"] == 1.0 and metrics["recall"] == 0.8 and metrics["entities"] == 5
    assert metrics["per_type"]["location"]["support"] == 3 and metrics["per_type"]["person"]["recall"] == 1.0
