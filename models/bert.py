"""``bert`` family: encoder -> pooled output -> dropout -> linear (the head of HF's BertForSequenceClassification).

Pooling (option ``pooling``): ``"pooler"`` (the encoder's dense+tanh over [CLS]; the default when the encoder has a
pooler layer), ``"cls"`` (the raw [CLS] hidden state; the default otherwise) or ``"mean"`` (mean over real tokens).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import BERT_LIKE_TYPES, POOLING_MODES, EncoderClassifier, pool_hidden_states, pools_first_position


def encoder_has_pooler(encoder: nn.Module) -> bool:
    """True when the encoder module has a pooler layer that produces ``pooler_output``."""
    return getattr(encoder, "pooler", None) is not None


def resolve_pooling(pooling: str | None, encoder: nn.Module) -> str:
    """``None`` -> ``"pooler"`` when the encoder has one, else ``"cls"``; validates explicit choices."""
    if pooling is None:
        return "pooler" if encoder_has_pooler(encoder) else "cls"
    if pooling not in POOLING_MODES:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING_MODES)}")
    if pooling == "pooler" and not encoder_has_pooler(encoder):
        raise ValueError("pooling='pooler' needs an encoder with a pooler layer; use 'cls' or 'mean'")
    return pooling


class BertClassificationHead(nn.Module):
    """dropout -> linear, on a pooled (B, H) vector."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))  # (B, H) -> (B, C)


class BertClassifier(EncoderClassifier):
    """BERT-style sequence classifier. Options: ``pooling`` (see module doc), plus the common ones."""

    family = "bert"
    encoder_types = BERT_LIKE_TYPES
    option_names = ("pooling",)

    def __init__(
        self,
        encoder_config: Any,
        tasks: Mapping[str, Sequence[str]],
        *,
        encoder: nn.Module | None = None,
        pooling: str | None = None,
        **common: Any,
    ):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        self.pooling = resolve_pooling(pooling, self.encoder)
        self.head = BertClassificationHead(self.hidden_size, len(self.tasks[self.task]), self.dropout_p)
        self.post_init()

    def head_options(self) -> dict[str, Any]:
        return {"pooling": self.pooling}

    def _task_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        out = self.encode(input_ids, attention_mask, token_type_ids, first_only=pools_first_position(self.pooling))
        pooled = pool_hidden_states(
            self.pooling, out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None)
        )  # (B, T, H) -> (B, H)
        return {self.task: self.head(pooled)}  # (B, C)
