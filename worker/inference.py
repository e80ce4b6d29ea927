"""Serving trained models: a loaded-model wrapper with length-sorted, token-budgeted batching, and a per-process cache.

``Predictor.predict(texts)`` tokenizes everything once (truncating to the model's training ``max_length``), sorts
by length, and packs rows into batches whose padded size (rows x longest row) stays under ``max_batch_tokens``
and ``max_batch_size`` rows (as text-embeddings-inference does), runs them under ``torch.inference_mode``, applies
softmax and returns the results in input order.

``get_predictor(model_dir, device)`` keeps up to ``CACHE_SIZE`` (4; env ``BERTQUEUE_PREDICTOR_CACHE``) loaded
models per process, least recently used evicted first, keyed by the resolved directory, the modification time of
its ``bertqueue_config.json`` (a re-saved model is reloaded) and the device. It is thread-safe: concurrent callers
for the same model wait for one load; ``predict`` itself is serialised per model by a lock.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

CACHE_SIZE = int(os.environ.get("BERTQUEUE_PREDICTOR_CACHE", "4") or 4)
DEFAULT_MAX_LENGTH = 128  # only for a saved model that recorded none


class Predictor:
    """A loaded classifier ready to label texts. Build with :meth:`load` (or :func:`get_predictor`)."""

    family: str
    tasks: dict[str, list[str]]
    is_multitask: bool

    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu", model_dir: str | Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.family = model.family
        self.tasks = {task: list(labels) for task, labels in model.tasks.items()}
        self.is_multitask = bool(model.is_multitask)
        self.max_length = int(model.max_length or DEFAULT_MAX_LENGTH)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu") -> "Predictor":
        """Load a model saved by ``models.io.save_model`` onto ``device``."""
        from models.io import load_model

        model, tokenizer = load_model(model_dir, device=device)
        return cls(model, tokenizer, device=device, model_dir=model_dir)

    def predict(
        self,
        texts: list[str],
        *,
        max_length: int | None = None,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
    ) -> list[dict]:
        """Classify ``texts``; one result per text, in input order.

        Single-task: ``{"label", "score", "scores": {label: probability}}``.
        Multitask: ``{"tasks": {task: {"label", "score", "scores"}}}``.
        """
        import torch

        if isinstance(texts, str):
            raise TypeError("predict() takes a list of texts, not a single string")
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return []
        max_length = int(max_length or self.max_length)
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
        encoded = self.tokenizer(
            texts, truncation=True, max_length=max_length, padding=False,
            return_attention_mask=False, return_token_type_ids=False,
        )["input_ids"]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]), reverse=True)
        probabilities: dict[str, list[list[float] | None]] = {task: [None] * len(texts) for task in self.tasks}
        with self._lock, torch.inference_mode():
            for batch in _token_budget_batches(order, [len(e) for e in encoded], max_batch_tokens, max_batch_size):
                longest = len(encoded[batch[0]])  # longest first: the order is by decreasing length
                ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)  # (B, T)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)  # (B, T)
                for b, i in enumerate(batch):
                    ids[b, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
                    mask[b, : len(encoded[i])] = 1
                logits = self.model(ids.to(self.device), mask.to(self.device)).logits
                if not isinstance(logits, dict):
                    logits = {next(iter(self.tasks)): logits}
                for task, task_logits in logits.items():
                    probs = torch.softmax(task_logits.float(), dim=-1).cpu().tolist()  # (B, C)
                    for i, p in zip(batch, probs):
                        probabilities[task][i] = p
        results = []
        for i in range(len(texts)):
            per_task = {task: _label_result(self.tasks[task], probabilities[task][i]) for task in self.tasks}
            results.append({"tasks": per_task} if self.is_multitask else next(iter(per_task.values())))
        return results


def _label_result(labels: list[str], probs: list[float]) -> dict[str, Any]:
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"label": labels[best], "score": float(probs[best]), "scores": {l: float(p) for l, p in zip(labels, probs)}}


def _token_budget_batches(order: list[int], lengths: list[int], max_tokens: int, max_size: int) -> list[list[int]]:
    """Cut ``order`` (decreasing length) into batches with rows x longest <= max_tokens (>= 1 row each)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1 > max_size or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# ------------------------------------------------------------------------------------------------ cache

_cache: OrderedDict[tuple, Predictor] = OrderedDict()
_cache_lock = threading.Lock()
_loading: dict[tuple, threading.Lock] = {}


def _cache_key(model_dir: str | Path, device: str) -> tuple:
    from models.io import CONFIG_NAME

    path = Path(model_dir).expanduser().resolve()
    try:
        mtime = (path / CONFIG_NAME).stat().st_mtime_ns
    except FileNotFoundError:
        raise ValueError(f"{model_dir} is not a saved bertqueue model (no {CONFIG_NAME})") from None
    return (str(path), mtime, device)


def get_predictor(model_dir: str | Path, device: str = "cpu") -> Predictor:
    """The cached :class:`Predictor` for ``model_dir`` on ``device``, loading it on first use (thread-safe LRU)."""
    key = _cache_key(model_dir, device)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        load_lock = _loading.setdefault(key, threading.Lock())
    with load_lock:  # one loader per key; others wait here and then find it cached
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        try:
            predictor = Predictor.load(key[0], device=device)
        finally:
            with _cache_lock:
                _loading.pop(key, None)
        with _cache_lock:
            # a re-saved model (new mtime) replaces the stale entry for the same dir/device
            for old in [k for k in _cache if k[0] == key[0] and k[2] == device]:
                del _cache[old]
            _cache[key] = predictor
            while len(_cache) > max(1, CACHE_SIZE):
                _cache.popitem(last=False)
    return predictor


def clear_predictor_cache() -> None:
    """Forget every cached model (tests, or to free memory)."""
    with _cache_lock:
        _cache.clear()
