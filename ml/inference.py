"""The per-process cache of loaded models, each served by its own batching engine: the worker's way to a model.

``get_predictor(model_dir, device, quantize=, engine_options=)`` keeps up to ``CACHE_SIZE`` (4; env
``BERTQUEUE_PREDICTOR_CACHE``) loaded models per process, least recently used evicted first, keyed by the resolved
directory, the modification time of its ``bertqueue_config.json`` (a re-saved model is reloaded), the device and
whether it is int8-quantized; a deleted model is dropped by :func:`drop_predictor` (the worker's remote-control
command) or, lazily, when a lookup finds its directory gone. It is thread-safe: concurrent callers for the same
model wait for one load.

Each loaded model gets one :class:`ml.batching.BatchingEngine` (its :attr:`Predictor.engine`), built with the
``engine_options`` the worker passes (its ``BATCH_WAIT_MS``, ``MAX_BATCH_TOKENS``, ``MAX_BATCH_SIZE`` settings):
every job of the process that uses the model submits through it, so their texts share batches.

The backend of a text-classification model is :class:`ml.text_classification.Predictor`; :class:`Predictor` and
:class:`PairRow` are importable from here too, as they always were.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from ml.batching import EngineOptions
from ml.text_classification import PairRow, Predictor, quantize_linear_layers

__all__ = ["CACHE_SIZE", "EngineOptions", "PairRow", "Predictor", "clear_predictor_cache", "drop_predictor",
           "get_predictor", "quantize_linear_layers"]

CACHE_SIZE = int(os.environ.get("BERTQUEUE_PREDICTOR_CACHE", "4") or 4)

_cache: OrderedDict[tuple, Predictor] = OrderedDict()
_cache_lock = threading.Lock()
_loading: dict[tuple, threading.Lock] = {}
_resolved_paths: dict[str | Path, Path] = {}
# what the cache did in this process (read by the worker's metrics, worker.telemetry): models loaded from disk,
# lookups answered from memory, models pushed out by the LRU bound (a deleted or re-saved model is not an eviction)
cache_stats = {"loads": 0, "hits": 0, "evictions": 0}


def _cache_key(model_dir: str | Path, device: str, quantize: bool) -> tuple:
    from models.io import CONFIG_NAME

    path = _resolved_paths.get(model_dir)
    if path is None:  # resolving walks the file system: done once per name (a job per text asks every time)
        path = _resolved_paths[model_dir] = Path(model_dir).expanduser().resolve()
    try:
        mtime = (path / CONFIG_NAME).stat().st_mtime_ns
    except FileNotFoundError:
        drop_predictor(path)  # deleted (or never saved): a cached copy must not outlive its files
        raise ValueError(f"{model_dir} is not a saved bertqueue model (no {CONFIG_NAME})") from None
    return (str(path), mtime, device, bool(quantize))


def get_predictor(
    model_dir: str | Path, device: str = "cpu", *, quantize: bool = False, engine_options: EngineOptions | None = None
) -> Predictor:
    """The cached :class:`Predictor` for ``model_dir`` on ``device`` (int8 when ``quantize``), loaded on first use,
    with its batching engine (:attr:`Predictor.engine`) built with ``engine_options`` if it has none yet.

    Thread-safe LRU: concurrent callers for one key wait for a single load.
    """
    predictor = _cached_predictor(model_dir, device, quantize)
    if engine_options is not None:
        predictor.serve(engine_options)  # the first options win: one engine per loaded model and process
    return predictor


# the backend of every task type but text classification ("module:Class", imported when a model needs it)
BACKENDS = {
    "token-classification": ".token_serving:TokenPredictor",
    "question-answering": ".qa_serving:QAPredictor",
    "multiple-choice": ".mc_serving:ChoicePredictor",
}


def _load(model_dir: str, device: str, quantize: bool):
    """The backend of the model saved in ``model_dir``, chosen by its task type (``models.io``): :data:`BACKENDS`'
    (a token model's ``TokenPredictor``, a QA model's ``QAPredictor``, never quantized; a multiple-choice model's
    ``ChoicePredictor``, quantized as asked: its ``quantizable``), else text classification's ``Predictor``."""
    import importlib

    from models.io import model_task_type, read_model_config

    task_type = model_task_type(read_model_config(model_dir))
    if task_type in BACKENDS:
        module, name = BACKENDS[task_type].split(":")
        backend = getattr(importlib.import_module(module, __package__), name)
        if getattr(backend, "quantizable", False):
            return backend.load(model_dir, device, quantize=quantize)
        return backend.load(model_dir, device)
    return Predictor.load(model_dir, device=device, quantize=quantize)


def _cached_predictor(model_dir: str | Path, device: str, quantize: bool) -> Predictor:
    key = _cache_key(model_dir, device, quantize)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            cache_stats["hits"] += 1
            return _cache[key]
        load_lock = _loading.setdefault(key, threading.Lock())
    with load_lock:  # one loader per key; others wait here and then find it cached
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                cache_stats["hits"] += 1  # loaded meanwhile by the caller this one waited for
                return _cache[key]
        try:
            predictor = _load(key[0], device, key[3])
        finally:
            with _cache_lock:
                _loading.pop(key, None)
        with _cache_lock:
            # a re-saved model (new mtime) replaces the stale entry for the same dir, device and precision, and
            # models whose directory is gone (deleted) give up their slots before any live one is evicted
            for old in [k for k in _cache if (k[0] == key[0] and k[2:] == key[2:]) or not Path(k[0]).is_dir()]:
                del _cache[old]
            _cache[key] = predictor
            cache_stats["loads"] += 1
            while len(_cache) > max(1, CACHE_SIZE):
                _cache.popitem(last=False)
                cache_stats["evictions"] += 1
    return predictor


def drop_predictor(model_dir: str | Path) -> int:
    """Forget every cached copy of the model at ``model_dir`` (any device or precision): it was deleted. Jobs
    already holding its predictor finish with it; the next lookup reloads from disk (and fails if the files are
    gone). Returns how many entries were dropped."""
    path = str(Path(model_dir).expanduser().resolve())
    with _cache_lock:
        stale = [key for key in _cache if key[0] == path]
        for key in stale:
            del _cache[key]
        for name in [name for name, resolved in _resolved_paths.items() if str(resolved) == path]:
            del _resolved_paths[name]
    return len(stale)


def clear_predictor_cache() -> None:
    """Forget every cached model (tests, or to free memory)."""
    with _cache_lock:
        _cache.clear()
        _resolved_paths.clear()
