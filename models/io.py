"""Saving and loading trained classifiers: safetensors + ``bertqueue_config.json`` + tokenizer files.

Layout of a model directory::

    model.safetensors        every parameter and persistent buffer (encoder + heads), no pickle
    bertqueue_config.json    everything needed to rebuild the module (see below); written last
    tokenizer.json, tokenizer_config.json, ...   (tokenizer.save_pretrained)

``bertqueue_config.json``::

    {"format_version": 2, "task_type": "text-classification", "family": "bert",
     "encoder": {"model_type": "bert", "config": {...full encoder config dict...}},
     "tasks": {"sentiment": ["negative", "neutral", "positive"]},
     "label2id": {"sentiment": {"negative": 0, ...}}, "id2label": {"sentiment": {"0": "negative", ...}},
     "head": {"dropout": 0.1, "freeze_encoder": false, "multi_label": false, "label_smoothing": 0.0,
              "pooling": "pooler"},                # every family option, explicit
     "class_weights": {"sentiment": [1.2, 0.8, 1.9]} | null,
     "thresholds": [0.4, 0.55, 0.5] | null,        # multi-label: the decision threshold of each label
     "max_length": 128, "metadata": {...free-form, e.g. the training config...}}

A token-classification model (``"task_type": "token-classification"``, format version 3) has one task, its tag set
(``id2label`` = the tags in id order, as ``BertForTokenClassification``'s), and adds what inference must repeat:
``"stride"`` (the overlap of the windows a sentence longer than ``max_length`` is split into) and ``"scheme"``
(``IOB2`` / ``IOB1`` / ``BIOES`` / ``plain``, ``core.task_types.tagging.detect_scheme``).

Format history: version 1 (before multi-label) had no ``multi_label`` / ``label_smoothing`` head options and no
``thresholds``; such a model was single-label with plain cross-entropy, so it loads with exactly those values
(:data:`FORMAT_1_HEAD`). Version 2 configs must list every head option. Version 3 added ``task_type``; an
absent ``task_type`` means text classification (every older model). A text-classification model is still written as
version 2 -- nothing in it changed, so older code keeps reading it -- while a model of any other task type is written
as version 3, so that older code refuses it plainly ("unsupported format_version") instead of rebuilding a text
head and failing on the state dict.

Loading never uses the training code's defaults, pickle or ``torch.load``: the encoder is rebuilt from its saved
config dict (``AutoConfig.for_model`` + ``AutoModel.from_config``), the heads from ``head``, and the safetensors
state dict is loaded strictly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT_VERSION = 3  # the newest version this code reads and writes
TEXT_FORMAT_VERSION = 2  # what a text-classification model is written as (see the format history above)
TEXT_CLASSIFICATION = "text-classification"
# what a format-1 model (saved before these options existed) was: the meaning of that format, not a code default
FORMAT_1_HEAD = {"multi_label": False, "label_smoothing": 0.0}
CONFIG_NAME = "bertqueue_config.json"
WEIGHTS_NAME = "model.safetensors"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def model_config_dict(model: Any, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``bertqueue_config.json`` content for ``model``."""
    encoder_config = model.encoder.config.to_dict()
    task_type = getattr(model, "task_type", TEXT_CLASSIFICATION)
    config = {
        "format_version": TEXT_FORMAT_VERSION if task_type == TEXT_CLASSIFICATION else FORMAT_VERSION,
        "task_type": task_type,
        "family": model.family,
        "encoder": {"model_type": model.encoder.config.model_type, "config": encoder_config},
        "tasks": {task: list(labels) for task, labels in model.tasks.items()},
        "label2id": {task: dict(m) for task, m in model.label2id.items()},
        "id2label": {task: {str(i): label for i, label in m.items()} for task, m in model.id2label.items()},
        "head": model.head_config(),
        "class_weights": model.class_weights,
        "thresholds": model.thresholds,
        "max_length": model.max_length,
        "metadata": metadata or {},
    }
    if task_type != TEXT_CLASSIFICATION:
        config["stride"] = getattr(model, "stride", None)
        config["scheme"] = getattr(model, "scheme", None)
    return config


def model_task_type(config: dict[str, Any]) -> str:
    """The task type of a ``bertqueue_config.json`` dict (absent: text classification, every pre-3 model)."""
    return config.get("task_type") or TEXT_CLASSIFICATION


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model(
    model: Any, tokenizer: Any, directory: str | os.PathLike, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Save ``model`` (+ ``tokenizer``) into ``directory`` (created if needed); returns the directory.

    ``bertqueue_config.json`` is written last (atomically), so a reader that sees it sees a complete model.
    ``metadata`` (JSON-able) is stored under ``"metadata"``.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model_config_dict(model, metadata)
    config_bytes = json.dumps(config, indent=2, default=_json_default).encode()  # fail before writing anything
    tokenizer.save_pretrained(str(directory))
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    tmp = directory / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
    save_file(state, str(tmp), metadata={"format": "pt", "family": model.family})
    os.replace(tmp, directory / WEIGHTS_NAME)
    _atomic_write(directory / CONFIG_NAME, config_bytes)
    return directory


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``bertqueue_config.json`` of a saved model (ValueError if missing or unsupported)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{directory} is not a saved bertqueue model (no {CONFIG_NAME})")
    config = json.loads(path.read_text())
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {version!r} (this code reads up to {FORMAT_VERSION})")
    return config


def build_from_config(config: dict[str, Any]) -> Any:
    """An (untrained) module with exactly the architecture described by a ``bertqueue_config.json`` dict."""
    from transformers import AutoConfig

    from .registry import family_options, model_class

    family = config["family"]
    task_type = model_task_type(config)
    if task_type != TEXT_CLASSIFICATION and config.get("format_version", 0) < 3:
        raise ValueError(f"bertqueue config: task_type {task_type!r} needs format_version 3")
    cls = model_class(family, task_type)
    encoder_dict = dict(config["encoder"]["config"])
    encoder_dict["model_type"] = config["encoder"]["model_type"]
    encoder_config = AutoConfig.for_model(**encoder_dict)
    head = dict(config["head"])
    if config.get("format_version") == 1:
        head = {**FORMAT_1_HEAD, **head}
    expected = set(family_options(family, task_type)) - {"class_weights"}
    if set(head) != expected:
        raise ValueError(
            f"bertqueue config for family {family!r} must list exactly the head options {sorted(expected)}; "
            f"got {sorted(head)}"
        )
    model = cls(encoder_config, config["tasks"], class_weights=config.get("class_weights"), **head)
    model.thresholds = config.get("thresholds")  # None on a multi-label model -> 0.5 each
    model.max_length = config.get("max_length")
    if task_type != TEXT_CLASSIFICATION:
        model.stride, model.scheme = config.get("stride"), config.get("scheme")
    return model


def load_model(directory: str | os.PathLike, device: str = "cpu") -> tuple[Any, Any]:
    """Load a model saved by :func:`save_model`; returns ``(model in eval mode on device, tokenizer)``."""
    import torch
    from safetensors.torch import load_file

    from .encoders import load_tokenizer

    directory = Path(directory)
    config = read_model_config(directory)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; don't disturb the caller's RNG
        model = build_from_config(config)
    state = load_file(str(directory / WEIGHTS_NAME), device="cpu")
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    tokenizer = load_tokenizer(directory)
    return model, tokenizer
