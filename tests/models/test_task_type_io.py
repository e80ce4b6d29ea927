"""models.registry and models.io know the task type: a class is found by (task type, family), a saved model records
its task type (absent = text classification, so every older model loads), a token model its windows and scheme."""
from __future__ import annotations

import json

import pytest
import torch

from models.bert import BertClassifier
from models.io import CONFIG_NAME, load_model, save_model
from models.registry import TASK_FAMILIES, build_model, family_options, model_class
from models.token_classification import BertLSTMTokenClassifier, BertTokenClassifier, DistilBertTokenClassifier

TAGS = ["B-person", "I-person", "O"]


def test_classes_are_looked_up_by_task_type_and_family():
    assert model_class("bert") is BertClassifier  # text classification stays the default
    assert model_class("bert", "token-classification") is BertTokenClassifier
    assert model_class("distilbert", "token-classification") is DistilBertTokenClassifier
    assert model_class("bert_lstm", "token-classification") is BertLSTMTokenClassifier
    from core import task_types

    assert set(TASK_FAMILIES) == set(task_types.names())  # every registered task type has its model classes
    assert "pooling" in family_options("bert") and "pooling" not in family_options("bert", "token-classification")
    with pytest.raises(ValueError, match="unknown model family 'multitask' for token-classification"):
        model_class("multitask", "token-classification")
    with pytest.raises(ValueError, match="unknown task type"):
        model_class("bert", "summarization")


def test_build_model_builds_a_token_head(tiny_bert_dir):
    model = build_model("bert", {"ner": TAGS}, tiny_bert_dir, task_type="token-classification")
    assert isinstance(model, BertTokenClassifier) and model.encoder.pooler is None
    with pytest.raises(ValueError, match="no option"):
        build_model("bert", {"ner": TAGS}, tiny_bert_dir, task_type="token-classification", pooling="mean")


@pytest.mark.parametrize("family", ["bert", "bert_lstm"])
def test_token_model_round_trip(family, tiny_bert_dir, tokenizer, tmp_path):
    options = {"lstm_hidden": 8} if family == "bert_lstm" else {}
    model = build_model(family, {"ner": TAGS}, tiny_bert_dir, task_type="token-classification",
                        class_weights=[1.0, 2.0, 0.5], **options).eval()
    model.max_length, model.stride, model.scheme = 16, 4, "IOB2"
    save_model(model, tokenizer, tmp_path)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert saved["format_version"] == 3 and saved["task_type"] == "token-classification"
    assert (saved["max_length"], saved["stride"], saved["scheme"]) == (16, 4, "IOB2")
    loaded, _ = load_model(tmp_path)
    assert type(loaded) is type(model) and loaded.class_weights == {"ner": [1.0, 2.0, 0.5]}
    assert (loaded.max_length, loaded.stride, loaded.scheme) == (16, 4, "IOB2")
    ids, mask = torch.tensor([[101, 2000, 2001, 102]]), torch.ones(1, 4, dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(model(ids, mask).logits, loaded(ids, mask).logits)  # (1, 4, 3)


def test_text_model_saves_and_loads_as_before(tiny_bert_dir, tokenizer, tmp_path):
    model = build_model("bert", {"sentiment": ["neg", "pos"]}, tiny_bert_dir).eval()
    save_model(model, tokenizer, tmp_path)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    # unchanged for text models (version 2, no token fields) so that older code keeps reading them
    assert saved["format_version"] == 2 and saved["task_type"] == "text-classification"
    assert "stride" not in saved and "scheme" not in saved
    loaded, _ = load_model(tmp_path)
    assert type(loaded) is BertClassifier

    del saved["task_type"]  # a model saved before task types
    (tmp_path / CONFIG_NAME).write_text(json.dumps(saved))
    old, _ = load_model(tmp_path)
    ids, mask = torch.tensor([[101, 2000, 102]]), torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        assert type(old) is BertClassifier and torch.allclose(model(ids, mask).logits, old(ids, mask).logits)


def test_a_token_config_claiming_an_old_format_is_refused(tiny_bert_dir, tokenizer, tmp_path):
    model = build_model("bert", {"ner": TAGS}, tiny_bert_dir, task_type="token-classification")
    save_model(model, tokenizer, tmp_path)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    saved["format_version"] = 2
    (tmp_path / CONFIG_NAME).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="format_version 3"):
        load_model(tmp_path)
