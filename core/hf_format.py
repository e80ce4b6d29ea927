"""Hugging Face checkpoints <-> platform model directories, on files only (no torch: the web uses this).

Two things live here:

* **safetensors on disk**: a file is ``8-byte little-endian header length + JSON header {name: {dtype, shape,
  data_offsets}} (+ "__metadata__") + raw bytes``. :func:`read_header` validates a header strictly (an import is
  untrusted); :func:`renamed_chunks` streams a copy whose tensors are renamed, some dropped and the rest repacked
  contiguously (safetensors requires the data offsets to cover the buffer exactly), never holding a tensor whole.
* **the mapping** between a platform model (``models.io`` layout: ``bertqueue_config.json`` + ``model.safetensors``
  under the platform's parameter names) and a transformers checkpoint of its task type (``config.json`` +
  ``model.safetensors`` under transformers' names): ``BertForSequenceClassification`` /
  ``DistilBertForSequenceClassification``, ``BertForTokenClassification`` / ``DistilBertForTokenClassification``.
  What differs per task type is declared once, by the task type (``core.task_types.HFHead``: the class of each
  family, the head's layers, the pooler, the head's dropout field); this module reads those declarations only.
  Parameter names differ only by prefix::

      platform                      transformers (bert)      transformers (distilbert)
      encoder.*                     bert.*                   distilbert.*
      head.<layer>.*                <layer>.*                <layer>.*       (classifier, pre_classifier, ...)

  Exporting is exact for the ``bert`` and ``distilbert`` models a task type declares, on inputs prepared as typed
  (no text normalization), unless the task type says otherwise (text classification: a single-label task, bert
  pooling through the encoder's pooler): :func:`hf_export_problem` says why any other model is not exported that way.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from core import task_types
from core.task_types import HFHead, TaskType

# bytes per element of every dtype the safetensors format defines
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32"})  # what model weights may be stored as on import
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own bound on the JSON header
MAX_TENSORS = 100_000
COPY_CHUNK = 1024 * 1024
WEIGHTS_NAME = "model.safetensors"
HF_CONFIG_NAME = "config.json"
PLATFORM_CONFIG_NAME = "bertqueue_config.json"  # models.io.CONFIG_NAME (models/ imports torch: not imported here)
# models.io's format versions: a text-classification model is written as version 2, any other task type as 3
PLATFORM_FORMAT_VERSION = 2
TASK_FORMAT_VERSION = 3

# the families with transformers classes: the encoder's prefix in a checkpoint, and the config.json field of the
# encoder's own dropout (what a head without a dropout field of its own uses)
ENCODER_PREFIXES = {"bert": "bert.", "distilbert": "distilbert."}
ENCODER_DROPOUT = {"bert": "hidden_dropout_prob", "distilbert": "dropout"}
# the heads' dropout fields of config.json, with transformers' defaults (classifier_dropout's None: the encoder's)
HEAD_DROPOUT_DEFAULTS = {"classifier_dropout": None, "seq_classif_dropout": 0.2, "qa_dropout": 0.1}
# buffers old transformers versions saved with the weights; rebuilt by the model itself, so dropped on import
IGNORED_SUFFIXES = (".position_ids",)
ACTIVATIONS = frozenset({
    "gelu", "gelu_new", "gelu_fast", "gelu_python", "gelu_pytorch_tanh", "gelu_accurate", "quick_gelu", "relu",
    "relu6", "silu", "swish", "tanh", "mish", "leaky_relu",
})


class CheckpointError(ValueError):
    """An imported checkpoint (or a saved model) that cannot be used: ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _weights_error(message: str) -> CheckpointError:
    return CheckpointError("invalid_weights", f"{WEIGHTS_NAME}: {message}")


# ---------------------------------------------------------------- safetensors headers


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file: its dtype, shape and byte range within the data section."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated safetensors header: the tensors by name, the free-form metadata, where the data starts."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] | None
    data_start: int  # 8 + header length

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: info.shape for name, info in self.tensors.items()}


def _unique_object(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice in the header")
    return dict(pairs)


def is_int(value: Any) -> bool:
    """A JSON integer (Python's ``bool`` is an ``int`` subclass, and ``true`` is no count or offset)."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """The header of the safetensors file at ``path``, checked strictly (CheckpointError ``invalid_weights``).

    Checked: the header length is within the file and :data:`MAX_HEADER_BYTES`; the header is a JSON object
    without duplicate keys; every tensor has a known dtype, a shape of non-negative integers and data offsets whose
    length is exactly shape x dtype size; the tensors' byte ranges cover the data section contiguously, with
    nothing before, between or after them; ``__metadata__`` maps strings to strings.
    """
    with open(path, "rb") as f:
        return parse_header(f, os.path.getsize(path))


def parse_header(f: BinaryIO, size: int) -> SafetensorsHeader:
    """The header of a safetensors file of ``size`` bytes read from ``f`` (at its start; only the header is read,
    so it also works on a zip entry before anything is extracted); checked as :func:`read_header` says."""
    prefix = f.read(8)
    if len(prefix) < 8:
        raise _weights_error("not a safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise _weights_error(f"the header length {length} does not fit the file ({size} bytes)")
    raw = f.read(length)
    if len(raw) < length:
        raise _weights_error(f"the file ends inside its {length}-byte header")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _weights_error(f"the header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _weights_error("the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise _weights_error("__metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise _weights_error(f"more than {MAX_TENSORS} tensors")
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if not name or not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _weights_error(f"tensor {name[:100]!r}: an entry is {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise _weights_error(f"tensor {name[:100]!r}: unknown dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
            raise _weights_error(f"tensor {name[:100]!r}: the shape must be a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise _weights_error(f"tensor {name[:100]!r}: data_offsets must be [begin, end] with 0 <= begin <= end")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise _weights_error(f"tensor {name[:100]!r}: its byte range does not match its shape and dtype")
        tensors[name] = TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])
    position = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != position:
            raise _weights_error("the tensors' byte ranges overlap or leave gaps")
        position = info.end
    if 8 + length + position != size:
        raise _weights_error(f"the data section holds {size - 8 - length} bytes, the tensors {position}")
    return SafetensorsHeader(tensors=tensors, metadata=metadata, data_start=8 + length)


def _header_bytes(header: SafetensorsHeader, names: Mapping[str, str], metadata: Mapping[str, str] | None) -> bytes:
    """The new header for ``names`` (new name -> source name), tensors packed in that order, padded to 8 bytes."""
    out: dict[str, Any] = {}
    if metadata:
        out["__metadata__"] = dict(metadata)
    position = 0
    for new, old in names.items():
        info = header.tensors[old]
        length = info.end - info.start
        out[new] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [position, position + length]}
        position += length
    raw = json.dumps(out, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # alignment of the data section, as the safetensors writer does
    return struct.pack("<Q", len(raw)) + raw


def renamed_size(header: SafetensorsHeader, names: Mapping[str, str], metadata: Mapping[str, str] | None = None) -> int:
    """The size of the file :func:`renamed_chunks` writes."""
    data = sum(header.tensors[old].end - header.tensors[old].start for old in names.values())
    return len(_header_bytes(header, names, metadata)) + data


def renamed_chunks(
    path: str | os.PathLike, header: SafetensorsHeader, names: Mapping[str, str],
    metadata: Mapping[str, str] | None = None, chunk: int = COPY_CHUNK,
) -> Iterator[bytes]:
    """A safetensors file holding, for each ``new name -> source name`` of ``names``, the source tensor of the file
    at ``path`` (read with ``header``) under its new name; tensors left out of ``names`` are dropped. Yields the
    file in pieces of at most ``chunk`` bytes (the header first), reading the source range by range."""
    yield _header_bytes(header, names, metadata)
    with open(path, "rb") as f:
        for old in names.values():
            info = header.tensors[old]
            f.seek(header.data_start + info.start)
            left = info.end - info.start
            while left > 0:
                piece = f.read(min(chunk, left))
                if not piece:
                    raise _weights_error("the file ended early (changed while being read?)")
                left -= len(piece)
                yield piece


def write_renamed(path: str | os.PathLike, header: SafetensorsHeader, names: Mapping[str, str], out: BinaryIO,
                  metadata: Mapping[str, str] | None = None) -> None:
    """Write :func:`renamed_chunks` into the binary file ``out``."""
    for piece in renamed_chunks(path, header, names, metadata):
        out.write(piece)


# ---------------------------------------------------------------- export: platform model -> transformers


def _task_type(name: str | None) -> TaskType | None:
    try:
        return task_types.get(name)
    except KeyError:
        return None


def _hf_head(task_type: str | None) -> HFHead:
    """The transformers declaration of ``task_type`` (CheckpointError ``not_exportable`` if it has none)."""
    kind = _task_type(task_type)
    if kind is None or kind.hf is None:
        raise CheckpointError("not_exportable", f"task type {task_type!r} has no transformers checkpoints")
    return kind.hf


def prefixes(family: str, task_type: str | None = None) -> tuple[tuple[str, str], ...]:
    """``(platform prefix, transformers prefix)`` of every parameter group of a ``family`` model of ``task_type``:
    the encoder, then each layer of the head."""
    head = _hf_head(task_type)
    return (("encoder.", ENCODER_PREFIXES[family]),
            *((f"head.{layer}.", f"{layer}.") for layer in head.layers[family]))


def hf_export_problem(config: Mapping[str, Any]) -> str | None:
    """Why the platform model described by ``config`` (its ``bertqueue_config.json``) is not exported as a plain
    transformers checkpoint with the same results, or None when it is."""
    family = config.get("family")
    model_type = (config.get("encoder") or {}).get("model_type")
    training = (config.get("metadata") or {}).get("training") or {}
    kind = _task_type(config.get("task_type"))
    if kind is None or kind.hf is None:
        return f"its task type {config.get('task_type')!r} has no transformers checkpoint here"
    if family not in kind.hf.architectures or family not in ENCODER_PREFIXES:
        return (f"the {family!r} family has no transformers equivalent for {kind.name} (only "
                f"{' and '.join(kind.hf.architectures)} do)")
    if model_type != family:
        return f"its encoder is a {model_type!r} model: transformers' {family} classes need a {family} encoder"
    if (training.get("text_normalization") or "none") != "none":
        return (f"it was trained on texts normalized with {training.get('text_normalization')!r}, which plain "
                "transformers would not apply")
    return kind.hf_export_problem(config)


def hf_weight_names(family: str, platform_names: list[str], task_type: str | None = None) -> dict[str, str]:
    """``{transformers name: platform name}`` for every parameter of a ``family`` model of ``task_type`` (default:
    text classification); CheckpointError for a name outside the known prefixes."""
    groups = prefixes(family, task_type)
    out = {}
    for name in platform_names:
        for ours, theirs in groups:
            if name.startswith(ours):
                out[theirs + name[len(ours):]] = name
                break
        else:
            raise CheckpointError("not_exportable", f"parameter {name!r} has no transformers equivalent")
    return out


def hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The transformers ``config.json`` of an exportable platform model (see :func:`hf_export_problem`); a task type
    whose ``HFHead.labels`` are fixed (multiple choice: one output per choice) names no labels."""
    family = config["family"]
    head = _hf_head(config.get("task_type"))
    task = next(iter(config["tasks"]))
    labels = list(config["tasks"][task])
    skip = {"architectures", "id2label", "label2id", "num_labels", "problem_type", "_name_or_path",
            "transformers_version", *HEAD_DROPOUT_DEFAULTS}
    out = {k: v for k, v in config["encoder"]["config"].items() if k not in skip}
    out["model_type"] = family
    out["architectures"] = [head.architectures[family]]
    if head.labels is None:  # fixed labels (multiple choice: positions) mean nothing to transformers: none named
        out["id2label"] = {str(i): label for i, label in enumerate(labels)}
        out["label2id"] = {label: i for i, label in enumerate(labels)}
    if head.problem_type is not None:
        out["problem_type"] = head.problem_type
    if family in head.dropout_field:
        out[head.dropout_field[family]] = float(config["head"]["dropout"])
    return out


# ---------------------------------------------------------------- import: transformers checkpoint -> platform

# the encoder fields kept from an imported config.json (anything else it holds is dropped, never passed on), with
# what each must be: ("int", min, max) / ("prob",) / ("eps",) / ("act",) / ("bool",) / ("pos",)
_BERT_FIELDS = {
    "vocab_size": ("int", 1, 1_000_000), "hidden_size": ("int", 1, 16_384), "num_hidden_layers": ("int", 1, 128),
    "num_attention_heads": ("int", 1, 256), "intermediate_size": ("int", 1, 65_536), "hidden_act": ("act",),
    "hidden_dropout_prob": ("prob",), "attention_probs_dropout_prob": ("prob",),
    "max_position_embeddings": ("int", 1, 65_536), "type_vocab_size": ("int", 1, 1024),
    "initializer_range": ("eps",), "layer_norm_eps": ("eps",), "pad_token_id": ("int", 0, 1_000_000),
    "position_embedding_type": ("pos",), "classifier_dropout": ("prob",),
}
_DISTILBERT_FIELDS = {
    "vocab_size": ("int", 1, 1_000_000), "dim": ("int", 1, 16_384), "n_layers": ("int", 1, 128),
    "n_heads": ("int", 1, 256), "hidden_dim": ("int", 1, 65_536), "activation": ("act",), "dropout": ("prob",),
    "attention_dropout": ("prob",), "max_position_embeddings": ("int", 1, 65_536),
    "sinusoidal_pos_embds": ("bool",), "initializer_range": ("eps",), "qa_dropout": ("prob",),
    "seq_classif_dropout": ("prob",), "pad_token_id": ("int", 0, 1_000_000),
}
_REQUIRED = {
    "bert": ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
    "distilbert": ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim"),
}
_DEFAULTS = {  # transformers' defaults for the shape-defining fields a config.json may leave out
    "bert": {"max_position_embeddings": 512, "type_vocab_size": 2},
    "distilbert": {"max_position_embeddings": 512},
}
MAX_LABELS = 10_000
LABEL_MAX_CHARS = 200  # core.schema.LABEL_MAX


def _invalid_config(message: str) -> CheckpointError:
    return CheckpointError("invalid_checkpoint", f"{HF_CONFIG_NAME}: {message}")


def _check_field(name: str, value: Any, rule: tuple) -> Any:
    kind = rule[0]
    if value is None and name in ("classifier_dropout", "pad_token_id"):
        return None
    if kind == "int" and is_int(value) and rule[1] <= value <= rule[2]:
        return value
    if kind == "prob" and isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1:
        return float(value)
    if kind == "eps" and isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    if kind == "act" and isinstance(value, str) and value in ACTIVATIONS:
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "pos" and value == "absolute":
        return value
    expected = {"int": f"an integer from {rule[1]} to {rule[2]}" if kind == "int" else "",
                "prob": "a number in [0, 1)", "eps": "a number in (0, 1)", "act": "a known activation name",
                "bool": "true or false", "pos": "'absolute'"}[kind]
    raise _invalid_config(f"{name} must be {expected}, not {str(value)[:40]!r}")


def importable_architectures() -> dict[str, tuple[str, str]]:
    """Every transformers class an import accepts: ``{class name: (task type, family)}``."""
    out = {}
    for name in task_types.names():
        head = task_types.get(name).hf
        for family, architecture in (head.architectures.items() if head is not None else ()):
            out[architecture] = (name, family)
    return out


def import_architecture(config: Mapping[str, Any]) -> tuple[str, str]:
    """``(task type, family)`` of an imported ``config.json``, from its one ``architectures`` entry, which a task
    type must declare (CheckpointError ``unsupported_architecture``)."""
    architectures = config.get("architectures")
    model_type = config.get("model_type")
    known = importable_architectures()
    if (not isinstance(architectures, list) or len(architectures) != 1 or not isinstance(architectures[0], str)
            or architectures[0] not in known):
        shown = architectures if isinstance(architectures, list) else repr(architectures)
        raise CheckpointError("unsupported_architecture", f"config.json architectures is {str(shown)[:200]}: only "
                              f"{', '.join(known)} checkpoints import")
    task_type, family = known[architectures[0]]
    if model_type != family:
        raise CheckpointError("unsupported_architecture",
                              f"config.json says {architectures[0]} but model_type {str(model_type)[:40]!r}")
    return task_type, family


def import_labels(config: Mapping[str, Any], task_type: str | None = None) -> list[str]:
    """The labels of an imported checkpoint of ``task_type`` (default: text classification), in id order: from
    ``id2label`` (ids 0..n-1), else ``LABEL_<i>`` for ``num_labels`` (default 2); 2 labels or more. ``problem_type``
    is the task type's (text classification: single-label) or none. A task type whose ``HFHead.labels`` fixes them
    (multiple choice) gets those."""
    head = _hf_head(task_type)
    if head.labels is not None:  # fixed by the task type (multiple choice: positions), whatever id2label says
        return list(head.labels)
    problem = config.get("problem_type")
    if problem not in (None, head.problem_type):
        accepted = f"{head.problem_type!r} or none" if head.problem_type else "none"
        raise CheckpointError("unsupported_architecture", f"problem_type {str(problem)[:40]!r}: a "
                              f"{task_types.get(task_type).name} checkpoint imports with problem_type {accepted}")
    id2label = config.get("id2label")
    if id2label is None:
        count = config.get("num_labels", 2)
        if not is_int(count) or not 2 <= count <= MAX_LABELS:
            raise _invalid_config(f"num_labels must be an integer from 2 to {MAX_LABELS}")
        return [f"LABEL_{i}" for i in range(count)]
    if not isinstance(id2label, dict) or not 2 <= len(id2label) <= MAX_LABELS:
        raise _invalid_config(f"id2label must map 2 to {MAX_LABELS} ids to labels (a classifier needs 2 labels)")
    if set(id2label) != {str(i) for i in range(len(id2label))}:
        raise _invalid_config("id2label keys must be the ids 0 to n-1")
    labels = [id2label[str(i)] for i in range(len(id2label))]
    for label in labels:
        if not isinstance(label, str) or not label.strip() or len(label) > LABEL_MAX_CHARS or "\x00" in label:
            raise _invalid_config(f"label {str(label)[:40]!r} must be a non-empty text of at most "
                                  f"{LABEL_MAX_CHARS} characters without NUL")
        try:
            label.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid_config("a label holds a lone UTF-16 surrogate") from None
    if len(set(labels)) != len(labels):
        raise _invalid_config("id2label has duplicate labels")
    return labels


def import_encoder_config(family: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder fields of an imported ``config.json``, validated (only the fields this module knows are kept)."""
    fields = _BERT_FIELDS if family == "bert" else _DISTILBERT_FIELDS
    missing = [name for name in _REQUIRED[family] if name not in config]
    if missing:
        raise _invalid_config(f"missing {', '.join(missing)}")
    out = dict(_DEFAULTS[family])
    for name, rule in fields.items():
        if name in config:
            out[name] = _check_field(name, config[name], rule)
    if family == "bert":
        hidden, heads = out["hidden_size"], out["num_attention_heads"]
    else:
        hidden, heads = out["dim"], out["n_heads"]
    if hidden % heads:
        raise _invalid_config(f"the hidden size {hidden} is not a multiple of the {heads} attention heads")
    return {k: v for k, v in out.items() if v is not None or k == "classifier_dropout"}


@dataclass(frozen=True)
class ModelCaps:
    """The largest checkpoint an import accepts (``MAX_MODEL_*`` settings): what a worker can load, and a bound on
    the disk a small upload of mostly zeros may fill."""

    layers: int
    hidden_size: int
    vocab_size: int
    positions: int
    parameters: int


def check_model_size(family: str, encoder: Mapping[str, Any], header: SafetensorsHeader, caps: ModelCaps) -> None:
    """CheckpointError ``model_too_large`` if the config (layers, hidden size, vocabulary, positions) or the weights
    (parameters counted from the header's shapes, no data read) exceed ``caps``."""
    if family == "bert":
        sizes = {"num_hidden_layers": encoder["num_hidden_layers"], "hidden_size": encoder["hidden_size"]}
    else:
        sizes = {"n_layers": encoder["n_layers"], "dim": encoder["dim"]}
    sizes |= {"vocab_size": encoder["vocab_size"], "max_position_embeddings": encoder["max_position_embeddings"]}
    limits = dict(zip(sizes, (caps.layers, caps.hidden_size, caps.vocab_size, caps.positions)))
    settings = dict(zip(sizes, ("MAX_MODEL_LAYERS", "MAX_MODEL_HIDDEN_SIZE", "MAX_MODEL_VOCAB_SIZE",
                                "MAX_MODEL_POSITIONS")))
    for name, value in sizes.items():
        if value > limits[name]:
            raise CheckpointError("model_too_large", f"{HF_CONFIG_NAME}: {name} is {value}; this deployment "
                                  f"imports at most {limits[name]} ({settings[name]})")
    parameters = sum(math.prod(info.shape) for info in header.tensors.values())
    if parameters > caps.parameters:
        raise CheckpointError("model_too_large", f"{WEIGHTS_NAME} holds {parameters:,} parameters; this deployment "
                              f"imports at most {caps.parameters:,} (MAX_MODEL_PARAMETERS)")


def expected_hf_shapes(family: str, encoder: Mapping[str, Any], num_labels: int,
                       task_type: str | None = None) -> dict[str, tuple[int, ...]]:
    """Every parameter of a transformers ``family`` model of ``task_type`` (default: text classification), names as
    saved, with its shape: the encoder (with BERT's pooler where the task type keeps it), then the head's layers."""
    head = _hf_head(task_type)
    if family == "bert":
        h, i, layers = encoder["hidden_size"], encoder["intermediate_size"], encoder["num_hidden_layers"]
        p = "bert."
        shapes = {
            f"{p}embeddings.word_embeddings.weight": (encoder["vocab_size"], h),
            f"{p}embeddings.position_embeddings.weight": (encoder["max_position_embeddings"], h),
            f"{p}embeddings.token_type_embeddings.weight": (encoder["type_vocab_size"], h),
            f"{p}embeddings.LayerNorm.weight": (h,), f"{p}embeddings.LayerNorm.bias": (h,),
        }
        per_layer = {
            "attention.self.query": (h, h), "attention.self.key": (h, h), "attention.self.value": (h, h),
            "attention.output.dense": (h, h), "intermediate.dense": (i, h), "output.dense": (h, i),
        }
        norms = ("attention.output.LayerNorm", "output.LayerNorm")
        layer_prefix = f"{p}encoder.layer"
    else:
        h, i, layers = encoder["dim"], encoder["hidden_dim"], encoder["n_layers"]
        p = "distilbert."
        shapes = {
            f"{p}embeddings.word_embeddings.weight": (encoder["vocab_size"], h),
            f"{p}embeddings.position_embeddings.weight": (encoder["max_position_embeddings"], h),
            f"{p}embeddings.LayerNorm.weight": (h,), f"{p}embeddings.LayerNorm.bias": (h,),
        }
        per_layer = {
            "attention.q_lin": (h, h), "attention.k_lin": (h, h), "attention.v_lin": (h, h),
            "attention.out_lin": (h, h), "ffn.lin1": (i, h), "ffn.lin2": (h, i),
        }
        norms = ("sa_layer_norm", "output_layer_norm")
        layer_prefix = f"{p}transformer.layer"
    for n in range(layers):
        for module, shape in per_layer.items():
            shapes[f"{layer_prefix}.{n}.{module}.weight"] = shape
            shapes[f"{layer_prefix}.{n}.{module}.bias"] = (shape[0],)
        for module in norms:
            shapes[f"{layer_prefix}.{n}.{module}.weight"] = (h,)
            shapes[f"{layer_prefix}.{n}.{module}.bias"] = (h,)
    if family in head.pooler:
        shapes |= {f"{p}pooler.dense.weight": (h, h), f"{p}pooler.dense.bias": (h,)}
    for layer, out in head.layers[family].items():
        size = num_labels if out == "labels" else h if out == "hidden" else int(out)
        shapes |= {f"{layer}.weight": (size, h), f"{layer}.bias": (size,)}
    return shapes


def check_label_count(family: str, header: SafetensorsHeader, num_labels: int, task_type: str | None = None) -> None:
    """CheckpointError ``labels_mismatch`` when config.json names ``num_labels`` labels (``id2label``) but a head
    layer with one output per label has another number of outputs in the weights' ``header``."""
    for layer, out in _hf_head(task_type).layers[family].items():
        info = header.tensors.get(f"{layer}.weight")
        if out != "labels" or info is None or not info.shape or info.shape[0] == num_labels:
            continue
        raise CheckpointError("labels_mismatch", f"config.json names {num_labels} labels (id2label) but the "
                              f"weights' {layer} has {info.shape[0]} outputs: id2label must name one label per "
                              "output of the classifier")


def _listed(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n[:100]) for n in sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def platform_weight_names(
    family: str, header: SafetensorsHeader, expected: Mapping[str, tuple[int, ...]], task_type: str | None = None,
) -> dict[str, str]:
    """``{platform name: transformers name}`` for an imported checkpoint's weights, after checking them against the
    ``expected`` shapes: every parameter present with its shape, a float dtype, nothing unknown (old
    ``position_ids`` buffers are dropped). CheckpointError ``invalid_weights`` otherwise."""
    present = {name for name in header.tensors if not name.endswith(IGNORED_SUFFIXES)}
    missing = [name for name in expected if name not in present]
    extra = [name for name in present if name not in expected]
    if missing or extra:
        parts = [f"missing {_listed(missing)}"] if missing else []
        parts += [f"unexpected {_listed(extra)}"] if extra else []
        raise _weights_error(f"the weights do not match the {family} architecture of config.json: "
                             f"{'; '.join(parts)}")
    for name, shape in expected.items():
        info = header.tensors[name]
        if info.shape != shape:
            raise _weights_error(f"{name} has shape {list(info.shape)}, config.json implies {list(shape)}")
        if info.dtype not in FLOAT_DTYPES:
            raise _weights_error(f"{name} is {info.dtype}; weights must be F32, F16 or BF16")
    groups = prefixes(family, task_type)
    out = {}
    for name in expected:
        for ours, theirs in groups:
            if name.startswith(theirs):
                out[ours + name[len(theirs):]] = name
                break
    return out


def platform_config(
    family: str, encoder: Mapping[str, Any], labels: list[str], *, max_length: int, metadata: Mapping[str, Any],
    task_type: str | None = None,
) -> dict[str, Any]:
    """The ``bertqueue_config.json`` (``models.io``) of an imported checkpoint of ``task_type`` (default: text
    classification): the task type's head on the validated encoder fields, its labels under its task name, plus
    what the task type adds (``TaskType.hf_import_fields``)."""
    kind = task_types.get(task_type)
    head = _hf_head(kind.name)
    field = head.dropout_field.get(family)
    dropout = encoder.get(field) if field else None
    if dropout is None:  # no field of its own, or left out: transformers' default, or else the encoder's dropout
        dropout = HEAD_DROPOUT_DEFAULTS.get(field) if field else None
    if dropout is None:
        dropout = encoder.get(ENCODER_DROPOUT[family], 0.1)
    encoder_fields = {k: v for k, v in encoder.items() if k not in HEAD_DROPOUT_DEFAULTS}
    task = head.task
    return {
        "format_version": PLATFORM_FORMAT_VERSION if kind.name == task_types.DEFAULT else TASK_FORMAT_VERSION,
        "task_type": kind.name,
        "family": family,
        "encoder": {"model_type": family, "config": {**encoder_fields, "model_type": family}},
        "tasks": {task: list(labels)},
        "label2id": {task: {label: i for i, label in enumerate(labels)}},
        "id2label": {task: {str(i): label for i, label in enumerate(labels)}},
        "head": {"dropout": float(dropout), "freeze_encoder": False, "multi_label": False, "label_smoothing": 0.0,
                 **head.head_options.get(family, {})},
        "class_weights": None,
        "thresholds": None,
        "max_length": int(max_length),
        "metadata": dict(metadata),
        **kind.hf_import_fields(labels, max_length),
    }


def import_max_length(encoder: Mapping[str, Any], tokenizer_config: Mapping[str, Any] | None) -> int:
    """The longest input an imported model reads: the tokenizer's ``model_max_length`` when it states a real one,
    bounded by the encoder's position embeddings."""
    limit = int(encoder["max_position_embeddings"])
    stated = (tokenizer_config or {}).get("model_max_length")
    if is_int(stated) and 1 < stated < limit:
        return stated
    return limit
