"""PyTorch model families for bertqueue (imports neither Celery nor SQLAlchemy).

Public API (imported lazily, so ``import models`` stays cheap)::

    models.FAMILIES, models.build_model(family, tasks, encoder_path, **options), models.model_class(family)
    models.save_model(model, tokenizer, directory), models.load_model(directory, device="cpu")
    models.resolve_encoder(family, name, cache_dir), models.default_encoder_path()
    models.ClassifierOutput
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "FAMILIES": ".registry",
    "build_model": ".registry",
    "model_class": ".registry",
    "save_model": ".io",
    "load_model": ".io",
    "resolve_encoder": ".registry",
    "default_encoder_path": ".encoders",
    "load_encoder": ".encoders",
    "load_tokenizer": ".encoders",
    "ClassifierOutput": ".base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
