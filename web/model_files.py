"""A model's files in and out: download as a zip (a plain Hugging Face checkpoint where exact), import a checkpoint.

Both work on files only (``core.hf_format``, ``core.archives``): the web never loads a model.

**Download** streams a zip built while it is sent (no whole zip in memory or on disk). A ``bert`` or ``distilbert``
model that transformers reproduces exactly (see :func:`core.hf_format.hf_export_problem`: text classification
single-label, bert pooling "pooler"; token classification) downloads as a transformers checkpoint: ``config.json``
(its task type's class, ``BertForSequenceClassification`` / ``DistilBertForTokenClassification``..., with
``id2label``/``label2id``), ``model.safetensors`` under transformers' names (renamed while streaming) and the
tokenizer (its ``model_max_length`` set to the model's ``max_length``, so ``truncation=True`` cuts where the
platform does). Any other model (bert_lstm, multitask...) downloads in the platform's own layout (``models.io``).
Both carry a model card, ``README.md``, whose metadata names the task type's Hugging Face ``pipeline_tag``.

**Import** checks the zip (``core.archives``), the config (its architecture names the task type and family) and the
safetensors header (``core.hf_format``; ``id2label`` must name one label per classifier output), the model's size
against the ``MAX_MODEL_*`` caps and the store's free disk (:func:`_check_size`, all before extracting anything),
then writes the platform layout (weights renamed into the platform's names, ``bertqueue_config.json`` of the task
type, the tokenizer) into a private folder on this host, publishes it (``core.artifacts.publish``: renamed into the
store directory, or written to the SQL store) and inserts the model row; any failure removes everything it wrote. A
download reads the files through ``core.artifacts.local_path`` (with the SQL store: this host's verified cache). Werkzeug has already spooled the upload to a temporary file (past 500 kB),
bounded by ``MAX_MODEL_UPLOAD_MB`` (:func:`upload_limits` raises the request's limit for the import endpoints only).
"""
from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from flask import request
from sqlalchemy import select

from core import artifacts, hf_format, models_registry, quotas, task_types
from core.accounts import Principal
from core.archives import ArchiveError, ArchiveLimits, CheckpointArchive, open_checkpoint
from core.config import Settings
from core.db import db
from core.hf_format import CheckpointError
from core.ownership import visible
from core.schema import Dataset, Job, TrainedModel, utcnow

from . import context
from .errors import ApiError
from .serializers import iso, model_to_dict
from .services import _clean_names, _not_found, check_quota, upload_size

IMPORT_ENDPOINTS = frozenset({"api.import_model", "pages.model_import"})
ZIP_CHUNK = 1024 * 1024  # bytes handed to the server at a time
MAX_JSON_BYTES = 1024 * 1024  # config.json, tokenizer_config.json, special_tokens_map.json...
MAX_TOKENIZER_BYTES = 64 * 1024 * 1024  # tokenizer.json of a large vocabulary is a few MB
TOKENIZER_CLASSES = frozenset({None, "BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer",
                               "DistilBertTokenizerFast"})
ZIP64_FROM = 2**31  # entries at least this large are written with zip64 sizes


def upload_limits() -> None:
    """``before_request``: the import endpoints take zips up to MAX_MODEL_UPLOAD_MB (every other request keeps the
    dataset limit). Registered before CSRF protection, which parses the page's form.

    The page's form is parsed (spooled to disk) by the CSRF check before the login guard runs, so the larger limit
    is granted to a logged-in user only: an anonymous POST must not make the server write gigabytes. (The API's
    body is read by the view only, after its token was checked.)"""
    if request.endpoint not in IMPORT_ENDPOINTS:
        return
    if request.endpoint == "pages.model_import":
        from flask_login import current_user

        if not current_user.is_authenticated:
            return
    request.max_content_length = context.settings().max_model_upload_bytes


# ---------------------------------------------------------------- download


@dataclass(frozen=True)
class _Entry:
    """One file of a zip being streamed: its name inside the zip, its pieces, its size if known, compressed?"""

    name: str
    chunks: Callable[[], Iterable[bytes]]
    size: int
    deflate: bool


class _Sink:
    """A write-only file for ``zipfile`` (not seekable, so entries get data descriptors) whose bytes are taken
    out as they are produced."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.position = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def zip_stream(entries: Iterable[_Entry]) -> Iterator[bytes]:
    """The zip of ``entries``, produced piece by piece while it is written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, date_time=utcnow().timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED if entry.deflate else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=entry.size >= ZIP64_FROM) as out:
                for piece in entry.chunks():
                    out.write(piece)
                    if len(sink.buffer) >= ZIP_CHUNK:
                        yield sink.take()
            if sink.buffer:
                yield sink.take()
    yield sink.take()  # the central directory, written on close


def _file_chunks(path: Path) -> Callable[[], Iterator[bytes]]:
    def read() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while piece := f.read(ZIP_CHUNK):
                yield piece
    return read


def _bytes_entry(name: str, data: bytes) -> _Entry:
    return _Entry(name, lambda: [data], len(data), True)


def _file_entry(path: Path, name: str | None = None) -> _Entry:
    return _Entry(name or path.name, _file_chunks(path), path.stat().st_size, path.suffix != ".safetensors")


def _model_files(directory: Path) -> list[Path]:
    """The files of a saved model (no hidden temporary files, no folders), sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


@dataclass(frozen=True)
class Download:
    """A model's zip: its file name and its bytes, produced while they are sent."""

    filename: str
    chunks: Iterator[bytes]
    hf_compatible: bool


def download(user: Principal, model_id: int) -> Download:
    """The zip of model ``model_id`` (404 if ``user`` cannot see it, 410 once deleted or its files are gone)."""
    with db.session() as session:
        model = session.scalar(select(TrainedModel).where(TrainedModel.id == model_id, visible(TrainedModel, user)))
        if model is None:
            raise _not_found("model", model_id)
        if model.deleted_at is not None:
            raise ApiError(410, "model_deleted", f"model {model_id} was deleted: its files are gone")
        info = model_to_dict(model)
        info["source"] = model.source
        dataset = None
        if model.training_job_id is not None:
            dataset = session.execute(
                select(Dataset.name, Dataset.row_count).join(Job, Job.dataset_id == Dataset.id)
                .where(Job.id == model.training_job_id)).first()
        info["dataset"] = {"name": dataset.name, "rows": dataset.row_count} if dataset is not None else None
        artifact_dir = model.artifact_dir
    try:
        directory = artifacts.local_path(context.settings(), artifact_dir)  # fetched into this host's cache if needed
        config = json.loads((directory / hf_format.PLATFORM_CONFIG_NAME).read_text(encoding="utf-8"))
        if not (directory / hf_format.WEIGHTS_NAME).is_file():
            raise OSError("no weights")
    except (artifacts.ArtifactUnavailable, artifacts.CacheFull) as exc:  # CacheFull is an OSError: first
        raise ApiError(503, "model_store_unavailable", f"the files of model {model_id} cannot be fetched right now: "
                       f"{exc}; try again later") from None
    except (OSError, ValueError, artifacts.ModelFilesMissing):
        raise ApiError(410, "model_files_missing", f"the files of model {model_id} are missing from the model "
                       "store") from None
    problem = hf_format.hf_export_problem(config)
    entries = _hf_entries(directory, config) if problem is None else None
    if entries is None:
        problem = problem or "its weights hold parameters transformers' class does not have"
        entries = [_file_entry(path) for path in _model_files(directory)]
    card = model_card(info, config, hf_problem=problem)
    filename = f"{_safe_filename(info['name'])}-v{info['version']}.zip"
    return Download(filename, zip_stream([_bytes_entry("README.md", card.encode("utf-8")), *entries]),
                    problem is None)


def _safe_filename(name: str) -> str:
    """A model name as a file name: letters, digits, ``-_.`` only (a header value must stay plain ASCII)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name).strip("._")
    return cleaned[:100] or "model"


def _hf_entries(directory: Path, config: dict[str, Any]) -> list[_Entry] | None:
    """The transformers checkpoint of an exportable model: config.json, renamed weights, the tokenizer files.
    None when its weights hold a parameter transformers does not have (then it downloads in the own layout)."""
    weights = directory / hf_format.WEIGHTS_NAME
    try:
        header = hf_format.read_header(weights)
        names = hf_format.hf_weight_names(config["family"], sorted(header.tensors), config.get("task_type"))
    except CheckpointError:
        return None
    metadata = {"format": "pt"}
    entries = [
        _bytes_entry(hf_format.HF_CONFIG_NAME, json.dumps(hf_format.hf_config(config), indent=2).encode()),
        _Entry(hf_format.WEIGHTS_NAME, lambda: hf_format.renamed_chunks(weights, header, names, metadata),
               hf_format.renamed_size(header, names, metadata), False),
    ]
    for path in _model_files(directory):
        if path.name in (hf_format.WEIGHTS_NAME, hf_format.PLATFORM_CONFIG_NAME, hf_format.HF_CONFIG_NAME):
            continue
        if path.name == "tokenizer_config.json":
            tokenizer_config = json.loads(path.read_text(encoding="utf-8"))
            if config.get("max_length"):
                tokenizer_config["model_max_length"] = int(config["max_length"])
            if config["family"] == "distilbert":  # DistilBERT's forward takes no token_type_ids
                tokenizer_config["model_input_names"] = ["input_ids", "attention_mask"]
            entries.append(_bytes_entry(path.name, json.dumps(tokenizer_config, indent=2).encode()))
        else:
            entries.append(_file_entry(path))
    return entries


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


# what a model card calls each metric a task type reports (``TaskType.metrics``)
METRIC_NAMES = {"macro_f1": "Macro-F1", "micro_f1": "Micro-F1", "accuracy": "Accuracy", "f1": "F1",
                "precision": "Precision", "recall": "Recall"}


def model_card(info: dict[str, Any], config: dict[str, Any], *, hf_problem: str | None) -> str:
    """The README.md of a downloaded model: its Hugging Face metadata (the task type's ``pipeline_tag``), what it is,
    what it was trained on, how good, how to load it."""
    kind = task_types.get(config.get("task_type"))
    metrics = info.get("metrics") or {}
    dataset = info.get("dataset")
    metadata = config.get("metadata") or {}
    if info.get("source") == "imported":
        data = f"imported from {metadata.get('imported_from') or 'a Hugging Face checkpoint'} (not trained here)"
    else:
        examples = [metrics.get("train_examples"), metrics.get("validation_examples")]
        split = (f": {examples[0]} for training, {examples[1]} for validation"
                 if all(isinstance(n, int) for n in examples) else "")
        data = f"{dataset['name']} ({dataset['rows']} rows{split})" if dataset else "(dataset no longer stored)"
    tasks = config.get("tasks") or info.get("tasks") or {}
    labels = "; ".join(f"{task}: {', '.join(labels)}" for task, labels in tasks.items()) if len(tasks) > 1 \
        else ", ".join(next(iter(tasks.values()), []))
    rows = [
        ("Name", f"{info['name']} (version {info['version']})"),
        ("Task", kind.label),
        ("Family", info["family"]),
        ("Encoder", info.get("encoder")),
        ("Labels", labels),
        ("Training data", data),
        # the task type's metrics the model has (its default one in any case: "n/a" for an imported model)
        *((METRIC_NAMES[name], _number(metrics.get(name))) for name in kind.metrics
          if name in METRIC_NAMES and (name in metrics or name == kind.default_metric)),
        ("Max input length", f"{config.get('max_length')} tokens"),
        ("Created", info.get("created_at") or iso(utcnow())),
    ]
    pair = bool((metadata.get("training") or {}).get("text_pair_column"))
    return _card_template().render(name=_cell(info["name"]), version=info["version"],
                                   rows=[(name, _cell(value)) for name, value in rows], hf_problem=hf_problem,
                                   pair=pair, max_length=config.get("max_length"), stride=config.get("stride"),
                                   pipeline_tag=kind.pipeline_tag)


@functools.cache
def _card_template() -> Any:
    """``templates/model_card.md``: plain text (Markdown), so no HTML autoescaping; cells are escaped by _cell."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                     autoescape=False, keep_trailing_newline=True, trim_blocks=True)
    return environment.get_template("model_card.md")


# ---------------------------------------------------------------- import


def _archive_error(exc: ArchiveError | CheckpointError) -> ApiError:
    if isinstance(exc, ArchiveError):
        return ApiError(exc.status, exc.code, exc.message)
    return ApiError(422, exc.code, exc.message)


def _json_file(archive: CheckpointArchive, name: str, limit: int = MAX_JSON_BYTES) -> dict[str, Any] | None:
    """A JSON object file of the checkpoint (None if absent); 422 ``invalid_checkpoint`` if it is not one."""
    if name not in archive.files:
        return None
    try:
        data = json.loads(archive.read_json_bytes(name, limit).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_checkpoint", f"{name} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_checkpoint", f"{name} must hold a JSON object")
    return data


def _check_tokenizer(archive: CheckpointArchive, family: str, vocab_size: int) -> dict[str, Any]:
    """The tokenizer config (with the class the platform's ``AutoTokenizer`` needs, since a platform model folder
    has no config.json), after checking the tokenizer needs no custom code and its ids fit the embeddings."""
    tokenizer_config = _json_file(archive, "tokenizer_config.json") or {}
    if "auto_map" in tokenizer_config:
        raise ApiError(422, "unsupported_tokenizer", "tokenizer_config.json names custom tokenizer code (auto_map), "
                       "which is never run here")
    tokenizer_class = tokenizer_config.get("tokenizer_class")
    if not isinstance(tokenizer_class, (str, type(None))) or tokenizer_class not in TOKENIZER_CLASSES:
        raise ApiError(422, "unsupported_tokenizer", f"tokenizer_class {str(tokenizer_class)[:60]!r}: a BERT or "
                       "DistilBERT (WordPiece) tokenizer is needed")
    tokenizer_config.setdefault("tokenizer_class", "BertTokenizer" if family == "bert" else "DistilBertTokenizer")
    # file names come from the folder itself: a path here (vocab_file: /etc/...) must never reach the loader
    tokenizer_config = {k: v for k, v in tokenizer_config.items() if not k.endswith(("_file", "_files"))
                        and k not in ("name_or_path", "_name_or_path")}
    _check_token_ids(archive, tokenizer_config, vocab_size)
    return tokenizer_config


SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer files write it: a string or an AddedToken dict (``{"content": ...}``)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(*configs: dict[str, Any]) -> set[str]:
    """Every special token the tokenizer files name (tokenizer_config.json, special_tokens_map.json)."""
    tokens: list[Any] = []
    for config in configs:
        tokens += [config.get(key) for key in SPECIAL_TOKEN_KEYS]
        for key in ("additional_special_tokens", "extra_special_tokens"):
            extra = config.get(key)
            tokens += list(extra.values()) if isinstance(extra, dict) else extra if isinstance(extra, list) else []
    return {text for text in map(_token_text, tokens) if text is not None}


def _check_token_ids(archive: CheckpointArchive, tokenizer_config: dict[str, Any], vocab_size: int) -> None:
    """Every token id the tokenizer can produce must index the model's embeddings: an id past them fails every
    job that meets it (and on CUDA, a device-side assert breaks the worker process for everyone). transformers
    appends any special token missing from the vocabulary as a new id, and takes added tokens' ids from
    tokenizer.json, tokenizer_config.json's ``added_tokens_decoder`` and added_tokens.json as written."""
    ids: dict[str, int] = {}
    if "tokenizer.json" in archive.files:
        tokenizer = _json_file(archive, "tokenizer.json", MAX_TOKENIZER_BYTES) or {}
        model = tokenizer.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        ids.update({k: v for k, v in vocab.items() if hf_format.is_int(v)} if isinstance(vocab, dict) else {})
        listed = tokenizer.get("added_tokens")
        for token in listed if isinstance(listed, list) else []:
            if isinstance(token, dict) and isinstance(token.get("content"), str) and hf_format.is_int(token.get("id")):
                ids[token["content"]] = token["id"]
    if "vocab.txt" in archive.files:
        lines = archive.read_json_bytes("vocab.txt", MAX_TOKENIZER_BYTES).decode("utf-8", "replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the newline ending the last token
        ids.update({token.rstrip("\r"): i for i, token in enumerate(lines) if token.rstrip("\r") not in ids})
    decoder = tokenizer_config.get("added_tokens_decoder")
    for key, token in (decoder.items() if isinstance(decoder, dict) else ()):
        text = _token_text(token)
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 18 and text is not None):
            raise ApiError(422, "unsupported_tokenizer", "tokenizer_config.json: added_tokens_decoder must map ids "
                           "to tokens")
        ids[text] = int(key)
    added = _json_file(archive, "added_tokens.json") or {}
    if not all(isinstance(k, str) and hf_format.is_int(v) for k, v in added.items()):
        raise ApiError(422, "unsupported_tokenizer", "added_tokens.json must map tokens to integer ids")
    ids.update(added)
    largest = max(ids.values(), default=-1)
    if largest >= vocab_size:
        token = next(t for t, i in ids.items() if i == largest)
        raise ApiError(422, "invalid_checkpoint", f"the tokenizer produces token id {largest} ({token[:40]!r}) but "
                       f"the model's vocabulary has {vocab_size} entries")
    missing = sorted(_special_tokens(tokenizer_config, _json_file(archive, "special_tokens_map.json") or {})
                     - ids.keys())
    if missing:
        raise ApiError(422, "unsupported_tokenizer", f"special token(s) {', '.join(repr(t[:40]) for t in missing[:5])} "
                       "are not in the tokenizer's vocabulary: they would get ids past the model's embeddings")


@dataclass(frozen=True)
class _Checked:
    task_type: str
    family: str
    labels: list[str]
    encoder: dict[str, Any]
    tokenizer_config: dict[str, Any]


def _check_configs(archive: CheckpointArchive) -> _Checked:
    config = _json_file(archive, hf_format.HF_CONFIG_NAME)
    task_type, family = hf_format.import_architecture(config)
    labels = hf_format.import_labels(config, task_type)
    encoder = hf_format.import_encoder_config(family, config)
    tokenizer_config = _check_tokenizer(archive, family, encoder["vocab_size"])
    return _Checked(task_type, family, labels, encoder, tokenizer_config)


def _weights_header(archive: CheckpointArchive) -> hf_format.SafetensorsHeader:
    """The safetensors header of the checkpoint's weights, read out of the zip (nothing extracted)."""
    with archive.open(hf_format.WEIGHTS_NAME) as f:
        return hf_format.parse_header(f, archive.files[hf_format.WEIGHTS_NAME].file_size)


DISK_RESERVE_BYTES = 64 * 1024 * 1024  # an import never takes the model store's disk down to its last bytes


def _check_size(archive: CheckpointArchive, checked: _Checked, header: hf_format.SafetensorsHeader,
                settings: Settings, store: Path) -> None:
    """Before anything is extracted: the model within the ``MAX_MODEL_*`` caps (config.json and the safetensors
    ``header``'s shapes, read from the zip: 422 ``model_too_large``), and room for it on the model store's disk (507
    ``insufficient_storage``). A checkpoint of zeros zips tiny, so the upload's size says nothing of this."""
    weights = archive.files[hf_format.WEIGHTS_NAME]
    caps = hf_format.ModelCaps(layers=settings.max_model_layers, hidden_size=settings.max_model_hidden_size,
                               vocab_size=settings.max_model_vocab_size, positions=settings.max_model_positions,
                               parameters=settings.max_model_parameters)
    hf_format.check_model_size(checked.family, checked.encoder, header, caps)
    # the weights are extracted, then copied under the platform's names: both lie on disk at once
    needed = 2 * weights.file_size + sum(i.file_size for n, i in archive.files.items() if n != hf_format.WEIGHTS_NAME)
    free = shutil.disk_usage(store).free
    if needed + DISK_RESERVE_BYTES > free:
        raise ApiError(507, "insufficient_storage", f"the model needs {needed / 2**20:,.0f} MB of disk to import and "
                       f"the model store has {free / 2**20:,.0f} MB free: try again later")


def _write_model(archive: CheckpointArchive, checked: _Checked, work: Path, filename: str) -> Path:
    """The platform layout of the checked checkpoint in ``work/model``; returns that folder."""
    source = archive.extract(hf_format.WEIGHTS_NAME, work / "source.safetensors")
    header = hf_format.read_header(source)
    expected = hf_format.expected_hf_shapes(checked.family, checked.encoder, len(checked.labels), checked.task_type)
    names = hf_format.platform_weight_names(checked.family, header, expected, checked.task_type)
    model_dir = work / "model"
    model_dir.mkdir()
    with open(model_dir / hf_format.WEIGHTS_NAME, "wb") as out:
        hf_format.write_renamed(source, header, names, out, {"format": "pt", "family": checked.family})
    source.unlink()
    for name in archive.files:
        if name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json", "added_tokens.json"):
            archive.extract(name, model_dir / name)
    (model_dir / "tokenizer_config.json").write_text(json.dumps(checked.tokenizer_config, indent=2))
    max_length = hf_format.import_max_length(checked.encoder, checked.tokenizer_config)
    config = hf_format.platform_config(checked.family, checked.encoder, checked.labels, max_length=max_length,
                                       metadata={"imported_from": filename, "source": "imported"},
                                       task_type=checked.task_type)
    # written last, as models.io does: a folder with it is a complete model
    (model_dir / hf_format.PLATFORM_CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return model_dir


STALE_IMPORT_S = 6 * 3600  # far longer than any import takes: older scratch folders were left by a killed process


def _remove_stale_imports(scratch: Path) -> None:
    """Remove import scratch folders a killed web process left behind (an import cleans up its own otherwise)."""
    cutoff = time.time() - STALE_IMPORT_S
    for folder in scratch.glob("import-*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another process removed it meanwhile
            continue


def import_model(user: Principal, stream: BinaryIO, filename: str | None, name: str | None) -> dict:
    """Register the Hugging Face checkpoint zipped in ``stream`` as a model of ``user`` named ``name`` (default: the
    zip's file name); returns the model. Nothing stays behind on any failure (ApiError, 4xx)."""
    settings = context.settings()
    limit = settings.max_model_upload_bytes
    stream, size = upload_size(stream, limit)
    if size > limit:
        raise ApiError(413, "payload_too_large", f"the file is too large: the limit is {limit / 2**20:g} MB "
                       "(MAX_MODEL_UPLOAD_MB)")
    filename, name = _clean_names(filename, name, models_registry.NAME_MAX)
    if name == "dataset":  # _clean_names' fallback is for datasets
        name = "imported-model"
    store = settings.local_model_dir  # this host's: the scratch space (and, directory store, the models too)
    (store / "tmp").mkdir(parents=True, exist_ok=True)
    _remove_stale_imports(store / "tmp")
    work = Path(tempfile.mkdtemp(prefix="import-", dir=store / "tmp"))
    final: str | None = None  # the published files' artifact_dir until the row owns them
    archive = None
    try:
        archive = open_checkpoint(stream, ArchiveLimits(max_total_bytes=settings.max_model_extracted_bytes))
        checked = _check_configs(archive)
        header = _weights_header(archive)
        hf_format.check_label_count(checked.family, header, len(checked.labels), checked.task_type)
        _check_size(archive, checked, header, settings, store)
        model_dir = _write_model(archive, checked, work, filename or "upload.zip")
        config = json.loads((model_dir / hf_format.PLATFORM_CONFIG_NAME).read_text())
        size_bytes = quotas.directory_bytes(model_dir)
        final = artifacts.publish(settings, model_dir, artifacts.new_key("imported"))
        try:
            result = _insert(user, name, checked, final, config, size_bytes, filename or "upload.zip")
        except ApiError:
            raise  # refused before anything was committed (quota, version race): the files go
        except Exception:
            if models_registry.model_recorded(final) is not False:
                final = None  # the commit may have landed though its answer was lost: the files stay with the row
            raise
        final = None  # recorded: the files belong to the row now
        return result
    except (ArchiveError, CheckpointError) as exc:
        raise _archive_error(exc) from None
    finally:
        if archive is not None:
            archive.zip.close()
        shutil.rmtree(work, ignore_errors=True)
        if final is not None:
            artifacts.discard(settings, final)


def _insert(user: Principal, name: str, checked: _Checked, artifact_dir: str, config: dict[str, Any],
            size_bytes: int, filename: str) -> dict:
    """Insert the model row with the next version of ``name`` (retrying lost version races)."""
    # the model's task type, as a trained model's params (its training request) carry it
    params = {"task_type": checked.task_type, "family": checked.family, "imported_from": filename,
              "max_length": config["max_length"]}
    for _ in range(models_registry.VERSION_ATTEMPTS):
        with db.session() as session:
            check_quota(session, user, models=1, model_bytes=size_bytes)  # the files are removed on refusal
            model = models_registry.insert_model(
                session, name=name, owner_id=user.id, family=checked.family,
                encoder=f"imported {checked.family} checkpoint"[:500], labels=list(checked.labels),
                tasks={task: list(labels) for task, labels in config["tasks"].items()}, metrics=None, params=params,
                artifact_dir=artifact_dir, training_job_id=None, source="imported", size_bytes=size_bytes,
            )
            if model is not None:
                return model_to_dict(model)
    raise ApiError(409, "version_conflict", f"could not allocate a version of {name!r}: try again")
