"""core.hf_format: strict safetensors headers, streamed renaming, and the platform <-> transformers mapping."""
from __future__ import annotations

import json
import struct

import pytest

from core import hf_format
from core.hf_format import CheckpointError


def _tensors():
    import torch

    return {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.float16),
            "c": torch.tensor([7, 8], dtype=torch.int64)}


def _save(path, tensors=None, metadata=None):
    from safetensors.torch import save_file

    save_file(tensors or _tensors(), str(path), metadata=metadata)
    return path


def _raw(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def test_read_header_of_a_real_file(tmp_path):
    header = hf_format.read_header(_save(tmp_path / "w.safetensors", metadata={"format": "pt"}))
    assert header.shapes() == {"a": (2, 3), "b": (4,), "c": (2,)}
    assert header.metadata == {"format": "pt"} and header.tensors["b"].dtype == "F16"


def test_renamed_copy_drops_and_repacks(tmp_path):
    import torch
    from safetensors.torch import load_file

    source = _save(tmp_path / "w.safetensors")
    header = hf_format.read_header(source)
    names = {"x.c": "c", "x.a": "a"}  # b dropped, the rest in a new order
    out = tmp_path / "renamed.safetensors"
    with open(out, "wb") as f:
        hf_format.write_renamed(source, header, names, f, {"format": "pt"})
    assert out.stat().st_size == hf_format.renamed_size(header, names, {"format": "pt"})
    loaded = load_file(str(out))
    assert set(loaded) == {"x.a", "x.c"}
    assert torch.equal(loaded["x.a"], _tensors()["a"]) and torch.equal(loaded["x.c"], _tensors()["c"])
    assert hf_format.read_header(out).shapes() == {"x.c": (2,), "x.a": (2, 3)}  # valid by our own rules too
    pieces = list(hf_format.renamed_chunks(source, header, names, {"format": "pt"}, chunk=5))
    assert max(len(p) for p in pieces[1:]) <= 5 and b"".join(pieces) == out.read_bytes()


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD_HEADERS = {
    "too short": b"\x01\x00",
    "length past the file": _raw({"t": F32_2}, b"\0" * 8, length=10**6),
    "not JSON": struct.pack("<Q", 4) + b"{no}",
    "not an object": _raw([1]),
    "duplicate key": struct.pack("<Q", 2 * len(json.dumps({"t": F32_2})) - 1)
    + json.dumps({"t": F32_2})[:-1].encode() + b"," + json.dumps({"t": F32_2})[1:].encode() + b"\0" * 8,
    "unknown dtype": _raw({"t": {**F32_2, "dtype": "F128"}}, b"\0" * 8),
    "dtype not a string": _raw({"t": {**F32_2, "dtype": ["F32"]}}, b"\0" * 8),
    "negative shape": _raw({"t": {**F32_2, "shape": [-2]}}, b"\0" * 8),
    "boolean shape": _raw({"t": {**F32_2, "shape": [True, 2]}}, b"\0" * 8),
    "size mismatch": _raw({"t": {**F32_2, "shape": [3]}}, b"\0" * 8),
    "extra key": _raw({"t": {**F32_2, "x": 1}}, b"\0" * 8),
    "gap": _raw({"t": {**F32_2, "data_offsets": [4, 12]}}, b"\0" * 12),
    "overlap": _raw({"t": F32_2, "u": {**F32_2, "data_offsets": [4, 12]}}, b"\0" * 12),
    "trailing bytes": _raw({"t": F32_2}, b"\0" * 9),
    "missing bytes": _raw({"t": F32_2}, b"\0" * 7),
    "bad metadata": _raw({"__metadata__": {"k": 1}, "t": F32_2}, b"\0" * 8),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_headers_are_refused(case, tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(BAD_HEADERS[case])
    with pytest.raises(CheckpointError) as caught:
        hf_format.read_header(path)
    assert caught.value.code == "invalid_weights"


def _platform(family="bert", model_type=None, pooling="pooler", **changes):
    config = {"family": family, "encoder": {"model_type": model_type or family, "config": {"hidden_size": 8}},
              "tasks": {"sentiment": ["neg", "pos"]},
              "head": {"dropout": 0.1, "multi_label": False, **({"pooling": pooling} if family == "bert" else {})},
              "metadata": {"training": {"text_normalization": "none"}}, "max_length": 64}
    config.update(changes)
    return config


def test_which_models_export_to_transformers():
    assert hf_format.hf_export_problem(_platform()) is None
    assert hf_format.hf_export_problem(_platform("distilbert")) is None
    assert "'mean'" in hf_format.hf_export_problem(_platform(pooling="mean"))
    assert "'cls'" in hf_format.hf_export_problem(_platform(pooling="cls"))
    assert "roberta" in hf_format.hf_export_problem(_platform(model_type="roberta"))
    assert "no transformers equivalent" in hf_format.hf_export_problem(_platform("bert_lstm"))
    assert "multitask" in hf_format.hf_export_problem(_platform("multitask"))
    multi = _platform()
    multi["head"]["multi_label"] = True
    assert "multi-label" in hf_format.hf_export_problem(multi)
    assert "several tasks" in hf_format.hf_export_problem(_platform(tasks={"a": ["x", "y"], "b": ["x", "y"]}))
    social = _platform(metadata={"training": {"text_normalization": "social"}})
    assert "'social'" in hf_format.hf_export_problem(social)


def test_hf_config_and_names():
    config = hf_format.hf_config(_platform())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["model_type"] == "bert"
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert config["classifier_dropout"] == 0.1
    assert hf_format.hf_weight_names("distilbert", ["encoder.x.weight", "head.pre_classifier.bias",
                                                    "head.classifier.weight"]) == {
        "distilbert.x.weight": "encoder.x.weight", "pre_classifier.bias": "head.pre_classifier.bias",
        "classifier.weight": "head.classifier.weight"}
    with pytest.raises(CheckpointError):
        hf_format.hf_weight_names("bert", ["head.lstm.weight"])


@pytest.mark.parametrize("task_type", ["text-classification", "token-classification"])
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_expected_shapes_are_transformers_own(family, task_type):
    """The parameter list an import checks against is exactly what transformers' class has (so a real checkpoint
    passes and a tampered one does not), for every task type's class; the class names its task type back."""
    import transformers
    from transformers import BertConfig, DistilBertConfig

    from core import task_types

    if family == "bert":
        config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=12, max_position_embeddings=16, num_labels=3)
    else:
        config = DistilBertConfig(vocab_size=50, dim=8, n_layers=2, n_heads=2, hidden_dim=12,
                                  max_position_embeddings=16, num_labels=3)
    architecture = task_types.get(task_type).hf.architectures[family]
    model = getattr(transformers, architecture)(config)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    encoder = hf_format.import_encoder_config(family, config.to_dict())
    assert hf_format.expected_hf_shapes(family, encoder, 3, task_type) == actual
    assert hf_format.import_architecture(config.to_dict() | {"architectures": [architecture]}) == (task_type, family)


def test_every_declared_architecture_is_one_task_type_s():
    """Each transformers class an import accepts names one task type and one family (with its head's layers)."""
    from core import task_types

    seen = {}
    for name in task_types.names():
        head = task_types.get(name).hf
        for family, architecture in (head.architectures.items() if head else ()):
            assert architecture not in seen and family in hf_format.ENCODER_PREFIXES and head.layers[family]
            seen[architecture] = name
    assert seen["BertForTokenClassification"] == "token-classification"


def _token(family="bert", **changes):
    return _platform(family, **{"task_type": "token-classification", "format_version": 3,
                                "tasks": {"tags": ["O", "B-per", "I-per"]}, "head": {"dropout": 0.3}, **changes})


def test_token_models_export_as_token_classifiers():
    assert hf_format.hf_export_problem(_token()) is None and hf_format.hf_export_problem(_token("distilbert")) is None
    assert "'bert_lstm' family has no transformers equivalent for token-classification" in \
        hf_format.hf_export_problem(_token("bert_lstm"))
    assert "roberta" in hf_format.hf_export_problem(_token(model_type="roberta"))
    config = hf_format.hf_config(_token())
    assert config["architectures"] == ["BertForTokenClassification"] and "problem_type" not in config
    assert config["id2label"] == {"0": "O", "1": "B-per", "2": "I-per"} and config["classifier_dropout"] == 0.3
    distil = hf_format.hf_config(_token("distilbert"))  # its head takes the encoder's dropout: none of its own
    assert distil["architectures"] == ["DistilBertForTokenClassification"] and "seq_classif_dropout" not in distil
    assert hf_format.hf_weight_names("bert", ["encoder.x.weight", "head.classifier.bias"], "token-classification") \
        == {"bert.x.weight": "encoder.x.weight", "classifier.bias": "head.classifier.bias"}
    with pytest.raises(CheckpointError):  # a token head has no pre_classifier
        hf_format.hf_weight_names("distilbert", ["head.pre_classifier.bias"], "token-classification")


def test_imported_token_checkpoint_config():
    config = {**BERT, "architectures": ["BertForTokenClassification"],
              "id2label": {"0": "O", "1": "B-PER", "2": "I-PER", "3": "B-LOC", "4": "I-LOC"}}
    task_type, family = hf_format.import_architecture(config)
    labels = hf_format.import_labels(config, task_type)
    encoder = hf_format.import_encoder_config(family, config)
    platform = hf_format.platform_config(family, encoder, labels, max_length=64, metadata={}, task_type=task_type)
    assert (platform["format_version"], platform["task_type"], platform["scheme"]) == (3, "token-classification",
                                                                                      "IOB2")
    assert platform["tasks"] == {"tags": labels} and platform["stride"] == 32  # a training request's default
    assert platform["head"] == {"dropout": 0.1, "freeze_encoder": False, "multi_label": False,
                                "label_smoothing": 0.0}  # no pooling option: a token head reads every token
    plain = hf_format.platform_config(family, encoder, ["O", "NOUN", "VERB"], max_length=64, metadata={},
                                      task_type=task_type)
    assert plain["scheme"] == "plain"
    with pytest.raises(CheckpointError) as caught:  # a token classifier has no problem_type
        hf_format.import_labels({**config, "problem_type": "single_label_classification"}, task_type)
    assert caught.value.code == "unsupported_architecture"


@pytest.mark.parametrize("task_type", ["text-classification", "token-classification"])
def test_id2label_must_name_one_label_per_classifier_output(tmp_path, task_type):
    import torch

    weights = {"classifier.weight": torch.zeros(5, 8), "classifier.bias": torch.zeros(5)}
    path = _save(tmp_path / "w.safetensors", weights)
    header = hf_format.read_header(path)
    hf_format.check_label_count("bert", header, 5, task_type)
    with pytest.raises(CheckpointError) as caught:
        hf_format.check_label_count("bert", header, 3, task_type)
    assert caught.value.code == "labels_mismatch" and "3 labels" in caught.value.message


BERT = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": 50,
        "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 12,
        "id2label": {"0": "neg", "1": "pos"}}


@pytest.mark.parametrize(("change", "code"), [
    ({"architectures": ["RobertaForSequenceClassification"], "model_type": "roberta"}, "unsupported_architecture"),
    ({"architectures": ["BertModel"]}, "unsupported_architecture"),
    ({"architectures": None}, "unsupported_architecture"),
    ({"architectures": [["BertForSequenceClassification"]]}, "unsupported_architecture"),  # unhashable: no 500
    ({"model_type": "distilbert"}, "unsupported_architecture"),
    ({"problem_type": "multi_label_classification"}, "unsupported_architecture"),
    ({"id2label": {"0": "neg", "2": "pos"}}, "invalid_checkpoint"),
    ({"id2label": {"0": "same", "1": "same"}}, "invalid_checkpoint"),
    ({"id2label": {"0": "neg"}}, "invalid_checkpoint"),
    ({"id2label": {"0": "neg", "1": "x" * 201}}, "invalid_checkpoint"),
    ({"id2label": {"0": "neg", "1": "a\x00b"}}, "invalid_checkpoint"),
    ({"id2label": {"0": "neg", "1": 5}}, "invalid_checkpoint"),
    ({"hidden_act": "os.system"}, "invalid_checkpoint"),
    ({"hidden_act": ["gelu"]}, "invalid_checkpoint"),
    ({"hidden_size": 9}, "invalid_checkpoint"),  # not a multiple of the heads
    ({"hidden_size": 10**9}, "invalid_checkpoint"),
    ({"hidden_dropout_prob": float("nan")}, "invalid_checkpoint"),
    ({"position_embedding_type": "relative_key"}, "invalid_checkpoint"),
    ({"vocab_size": None}, "invalid_checkpoint"),
])
def test_imported_configs_are_validated(change, code):
    config = {**BERT, **change}
    with pytest.raises(CheckpointError) as caught:
        task_type, family = hf_format.import_architecture(config)
        hf_format.import_labels(config, task_type)
        hf_format.import_encoder_config(family, config)
    assert caught.value.code == code


def test_imported_config_keeps_only_known_fields():
    config = {**BERT, "auto_map": {"AutoModel": "evil.Model"}, "trust_remote_code": True, "num_labels": 2}
    encoder = hf_format.import_encoder_config("bert", config)
    assert "auto_map" not in encoder and "trust_remote_code" not in encoder
    assert encoder["max_position_embeddings"] == 512 and encoder["type_vocab_size"] == 2  # transformers' defaults
    platform = hf_format.platform_config("bert", encoder, ["neg", "pos"], max_length=128, metadata={"x": 1})
    assert platform["head"]["pooling"] == "pooler" and platform["tasks"] == {"label": ["neg", "pos"]}
    assert hf_format.import_max_length(encoder, {"model_max_length": 10**30}) == 512
    assert hf_format.import_max_length(encoder, {"model_max_length": 128}) == 128
    assert hf_format.import_labels({k: v for k, v in BERT.items() if k != "id2label"}) == ["LABEL_0", "LABEL_1"]
