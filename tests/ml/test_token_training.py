"""Token classification through the platform's training loop (``ml.loop.train_classifier``): a tiny tagger learns 16
sentences cut into windows, is saved, loads back as a token model and tags the sentences back through the serving
backend; the history, best checkpoint and class weights follow entity F1."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from core.options import TrainConfig
from core.task_types.tagging import decode_entities
from ml.config import TrainingDataError
from ml.loop import train_classifier
from ml.token_serving import TokenPredictor
from models.io import CONFIG_NAME, load_model
from models.token_classification import TokenClassifier
from tests.ml.test_token_overfit import _sentences


def token_config(**overrides) -> SimpleNamespace:
    """``TrainConfig``'s defaults plus the token fields (``TrainConfig`` has no ``task_type`` field yet)."""
    defaults = {name: field.default for name, field in TrainConfig.model_fields.items()}
    # max_length 6 (below TrainConfig's minimum, hence a namespace) forces windows: sentences are 6-9 sub-tokens
    base = dict(task_type="token-classification", tokens_column="tokens", tags_column="ner", stride=2,
                max_length=6, epochs=30, batch_size=8, learning_rate=3e-3, dropout=0.0, seed=0, metric=None,
                validation_split=0.0)
    return SimpleNamespace(**{**defaults, **base, **overrides})


def token_rows(sentences=None) -> list[dict[str, str]]:
    """Rows as ``core.datasets`` stores token data: JSON arrays in the cells."""
    return [{"tokens": json.dumps(words), "ner": json.dumps(tags)} for words, tags in (sentences or _sentences())]


@pytest.mark.parametrize("family", ["bert", "bert_lstm", "distilbert"])
def test_token_model_trains_saves_loads_and_tags_back(family, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    sentences = _sentences()
    rows = token_rows(sentences)
    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    config = token_config(family=family, encoder=str(encoder), lstm_hidden=16)
    calls = []
    result = train_classifier(rows, config, tmp_path / "model", validation_rows=rows,
                              progress=lambda fraction, info: calls.append(info))
    metrics = result.metrics

    assert metrics["f1"] == 1.0 and metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["accuracy"] == 1.0 and metrics["metric"] == "f1"
    assert set(metrics["per_type"]) == {"location", "person"}
    assert metrics["scheme"] == "IOB2" and metrics["labels"] == sorted({t for _, tags in sentences for t in tags})
    assert metrics["task_type"] == "token-classification" and metrics["stride"] == 2
    assert metrics["sentences"] == {"train": 16, "validation": 16}
    assert metrics["tokens"]["train"] == sum(len(words) for words, _ in sentences)
    assert metrics["windows"]["train"] > 16  # max_length 6 cut the sentences into windows
    assert result.tasks == {"ner": metrics["labels"]}
    history = metrics["history"]
    assert all({"f1", "precision", "recall", "accuracy", "val_loss"} <= set(r) for r in history)
    assert {"f1", "accuracy"} <= set(metrics["epochs"][0])
    # the kept checkpoint is the first evaluation with the best f1
    best = max(r["f1"] for r in history)
    assert metrics["best_step"] == next(r["step"] for r in history if r["f1"] == best)
    assert calls[-1]["phase"] == "done" and calls[-1]["f1"] == 1.0

    saved = json.loads((tmp_path / "model" / CONFIG_NAME).read_text())
    assert saved["task_type"] == "token-classification" and saved["format_version"] == 3
    assert (saved["max_length"], saved["stride"], saved["scheme"]) == (6, 2, "IOB2")
    assert saved["id2label"]["ner"] == {str(i): tag for i, tag in enumerate(metrics["labels"])}
    model, _ = load_model(tmp_path / "model")
    assert isinstance(model, TokenClassifier) and model.family == family
    assert (model.max_length, model.stride, model.scheme) == (6, 2, "IOB2")

    predictor = TokenPredictor.load(tmp_path / "model", "cpu")
    assert (predictor.max_length, predictor.stride) == (6, 2)
    words = [w for w, _ in sentences]
    tagged = predictor.results(*_run(predictor, words))
    assert [r["tags"] for r in tagged] == [tags for _, tags in sentences]
    texts = [" ".join(w) for w in words]
    for (sentence_words, tags), text, found in zip(sentences, texts, predictor.results(*_run(predictor, texts))):
        expected = [(e.type, " ".join(sentence_words[e.start:e.end])) for e in decode_entities(tags)]
        assert [(e["entity_group"], e["word"]) for e in found["entities"]] == expected


def _run(predictor, inputs):
    """What the batching engine does for one request: encode, forward every row, hand each input its rows."""
    encoded = predictor.encode(inputs)
    outputs = predictor.forward(encoded.rows)
    per_input, start = [], 0
    for count in encoded.counts:
        per_input.append(outputs[start:start + count])
        start += count
    return per_input, encoded


def test_balanced_class_weights_and_sentence_split(tiny_bert_dir, tmp_path):
    config = token_config(encoder=str(tiny_bert_dir), epochs=1, class_weights="balanced", validation_split=0.25,
                          early_stopping_patience=2)
    result = train_classifier(token_rows(), config, tmp_path / "model")
    metrics = result.metrics
    weights = metrics["class_weights"]["ner"]
    labels = metrics["labels"]
    assert len(weights) == len(labels) and weights[labels.index("O")] < weights[labels.index("I-person")]
    assert metrics["sentences"] == {"train": 12, "validation": 4}  # split by sentence, before windowing
    assert metrics["validation_source"] == "split" and metrics["f1"] is not None
    model, _ = load_model(tmp_path / "model")
    assert model.class_weights == {"ner": weights}


def test_plain_tags_are_scored_per_word(tiny_bert_dir, tmp_path):
    pos = [(words, ["NOUN" if w[0].isupper() else "OTHER" for w in words]) for words, _ in _sentences()]
    rows = token_rows(pos)
    result = train_classifier(rows, token_config(encoder=str(tiny_bert_dir), epochs=2), tmp_path / "m",
                              validation_rows=rows)
    metrics = result.metrics
    assert metrics["scheme"] == "plain" and set(metrics["per_type"]) == {"NOUN", "OTHER"}
    assert metrics["f1"] == metrics["accuracy"] == metrics["precision"]


@pytest.mark.parametrize("rows, message", [
    ([{"tokens": '["a", "b"]', "ner": '["O"]'}] * 12, "2 tokens but 1 tags"),
    ([{"tokens": "not json", "ner": "[]"}] * 12, "JSON array"),
    ([{"tokens": '["a"]', "ner": '["O"]'}] * 12, "single tag"),
    ([{"words": '["a"]', "ner": '["O"]'}] * 12, "column 'tokens' not found"),
])
def test_bad_token_rows_fail_clearly(rows, message, tiny_bert_dir, tmp_path):
    with pytest.raises(TrainingDataError, match=message):
        train_classifier(rows, token_config(encoder=str(tiny_bert_dir)), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_text_options_that_do_not_apply_are_refused(tiny_bert_dir, tmp_path):
    with pytest.raises(TrainingDataError, match="pooling"):
        train_classifier(token_rows(), token_config(encoder=str(tiny_bert_dir), pooling="mean"), tmp_path / "m")
    with pytest.raises(TrainingDataError, match="multi_label"):
        train_classifier(token_rows(), token_config(encoder=str(tiny_bert_dir), multi_label=True), tmp_path / "m")
    with pytest.raises(TrainingDataError, match="multitask"):
        train_classifier(token_rows(), token_config(encoder=str(tiny_bert_dir), family="multitask"), tmp_path / "m")


def test_metric_defaults_to_entity_f1_and_can_be_chosen(tiny_bert_dir, tmp_path):
    from ml.loop import _metric, task_data

    rows = token_rows()
    token = task_data(rows, None, token_config())
    assert _metric(token_config(metric=None), token) == "f1"
    assert _metric(token_config(metric="macro_f1"), token) == "f1"  # TrainConfig's default: the task type decides
    assert _metric(token_config(metric="micro_f1"), token) == "f1"
    assert _metric(token_config(metric="val_loss"), token) == "val_loss"
    assert _metric(token_config(metric="accuracy"), token) == "accuracy"
    result = train_classifier(rows, token_config(encoder=str(tiny_bert_dir), epochs=1, metric="val_loss"),
                              tmp_path / "m", validation_rows=rows)
    assert result.metrics["metric"] == "val_loss"
