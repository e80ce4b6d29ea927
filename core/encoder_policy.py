"""Which encoders a training request may name. Pure path logic: usable by the web (which never sees the worker's
disk) and by the worker alike."""
from __future__ import annotations

import os
from pathlib import Path

from .config import Settings

DEFAULT_NAMES = frozenset({"", "default"})


class EncoderNotAllowed(ValueError):
    """The deployment does not allow training from this encoder. The message never reveals what exists."""


def is_local_path(name: str) -> bool:
    """Whether ``name`` names a directory rather than a hub id ("org/model" is a hub id)."""
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..") or os.path.isdir(name)


def allowed_roots(settings: Settings) -> list[Path]:
    roots = [Path(r).expanduser() for r in settings.encoder_roots.split(os.pathsep) if r.strip()]
    return [Path(os.path.realpath(r)) for r in (*roots, Path(settings.model_store) / "encoders")]


def check_encoder(name: str | None, settings: Settings) -> None:
    """Raise :class:`EncoderNotAllowed` unless ``name`` may be used as an encoder on this deployment."""
    if name is None or name.strip().lower() in DEFAULT_NAMES:
        return
    refusal = EncoderNotAllowed(f"encoder {name!r} is not available on this deployment")
    if is_local_path(name):
        if not settings.encoder_roots.strip():
            return  # no restriction configured
        resolved = Path(os.path.realpath(os.path.expanduser(name)))
        if not any(resolved == root or resolved.is_relative_to(root) for root in allowed_roots(settings)):
            raise refusal
        return
    if not settings.allow_hub_encoders:
        raise refusal
