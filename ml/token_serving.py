"""The token-classification backend (``ml.backend``): texts or pre-tokenized sentences in, entities or word tags out.

``encode`` turns each input into its windows (``ml.token_data``: a text longer than the model's ``max_length`` is
several rows, never cut), the batching engine runs the rows of every request together, and ``results`` puts each
input's scored tokens back in order before reading entities (raw texts, ``aggregation_strategy`` with the meaning of
the transformers pipeline) or one tag per word (pre-tokenized input) off them.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import Encoded
from .batching import Served
from .text_classification import _autocast
from .token_aggregation import STRATEGIES
from .token_data import (
    DEFAULT_STRIDE,
    effective_stride,
    gather,
    text_entities,
    text_windows,
    word_tags,
    word_windows,
)


TOKEN_CLASSIFICATION = "token-classification"


@dataclass
class _Inputs:
    """What ``results`` needs to read one request's outputs back: the windows and, per input, its tokens."""

    texts: list[str] | None  # raw texts, or None for pre-tokenized sentences
    sentences: list[list[str]] | None
    windows: list
    sources: list  # per text its tokens and offsets; per sentence its word ids
    lengths: list[int]  # tokens per input


class TokenPredictor(Served):
    """A loaded token classifier as a backend of the batching engine.

    ``model``: a ``models.token_classification`` model (logits (B, T, C)); ``id2label``: its tags in id order;
    ``max_length`` / ``stride``: the windows it was trained with.
    """

    def __init__(self, model: Any, tokenizer: Any, id2label: Sequence[str], *, device: str = "cpu",
                 max_length: int = 128, stride: int | None = DEFAULT_STRIDE, aggregation_strategy: str = "first"):
        if aggregation_strategy not in STRATEGIES:
            raise ValueError(f"unknown aggregation_strategy {aggregation_strategy!r}")
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device
        self.id2label = list(id2label)
        self.max_length, self.stride = int(max_length), effective_stride(max_length, stride)
        self.aggregation_strategy = aggregation_strategy
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        prefix = getattr(getattr(getattr(tokenizer, "_tokenizer", None), "model", None), "continuing_subword_prefix",
                         None)
        self.subword_prefix = prefix or None
        self._lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self._engine = None

    @classmethod
    def load(cls, model_dir: Any, device: str = "cpu", *, aggregation_strategy: str = "first") -> "TokenPredictor":
        """The saved token model in ``model_dir`` (``models.io.save_model``) with the windows it was trained with
        (its ``max_length`` and ``stride``); ValueError for a model of another task type."""
        from models.io import load_model, model_task_type, read_model_config

        config = read_model_config(model_dir)
        if model_task_type(config) != TOKEN_CLASSIFICATION:
            raise ValueError(f"{model_dir} holds a {model_task_type(config)} model, not a token-classification one")
        model, tokenizer = load_model(model_dir, device)
        return cls(model, tokenizer, model.tasks[model.task], device=device, max_length=model.max_length or 128,
                   stride=model.stride, aggregation_strategy=aggregation_strategy)

    def encode(self, inputs: Sequence[str | Sequence[str]]) -> Encoded:
        """Windows of every input: all raw texts (``str``) or all pre-tokenized sentences (lists of words)."""
        inputs = list(inputs)
        if not inputs:
            return Encoded([], [], _Inputs([], None, [], [], []))
        if all(isinstance(item, str) for item in inputs):
            windows, sources = text_windows(self.tokenizer, inputs, self.max_length, self.stride)
            context = _Inputs(inputs, None, windows, sources, [len(s["tokens"]) for s in sources])
        elif all(isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item) for item in inputs):
            sentences = [list(item) for item in inputs]
            windows, sources = word_windows(self.tokenizer, sentences, self.max_length, self.stride)
            context = _Inputs(None, sentences, windows, sources, [len(ids) for ids in sources])
        else:
            raise ValueError("token classification takes raw texts, or pre-tokenized sentences (lists of words)")
        counts = [0] * len(inputs)
        for window in windows:
            counts[window.source] += 1
        return Encoded([w.input_ids for w in windows], counts, context)

    def forward(self, rows: list[list[int]]) -> list[np.ndarray]:
        """Per row its (T_row, C) tag probabilities (fp32, padding cut off), for one padded batch."""
        import torch

        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (B, T)
        for b, row in enumerate(rows):
            ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, :len(row)] = 1
        with self.forward_guard(), torch.inference_mode(), _autocast(self.device):
            logits = self.model(ids.to(self.device), mask.to(self.device)).logits  # (B, T, C)
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()  # (B, T, C)
        return [probs[b, :len(row)] for b, row in enumerate(rows)]

    def results(self, outputs: list[list[np.ndarray]], encoded: Encoded | None = None, *,
                aggregation_strategy: str | None = None) -> list[dict]:
        """Per raw text ``{"entities": [...]}``; per pre-tokenized sentence ``{"tokens", "tags", "scores"}``."""
        strategy = aggregation_strategy or self.aggregation_strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown aggregation_strategy {strategy!r}")
        context: _Inputs = encoded.context
        flat = [p for per_input in outputs for p in per_input]
        token_probs = gather(context.windows, flat, context.lengths)
        if context.texts is not None:
            return [{"entities": text_entities(text, source, probs, self.id2label, strategy, self.subword_prefix)}
                    for text, source, probs in zip(context.texts, context.sources, token_probs)]
        out = []
        for words, word_ids, probs in zip(context.sentences, context.sources, token_probs):
            tags, scores = word_tags(probs, word_ids, len(words), self.id2label)
            out.append({"tokens": words, "tags": tags, "scores": scores})
        return out
