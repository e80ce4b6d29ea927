"""``distilbert`` family: DistilBERT encoder -> [CLS] -> pre_classifier (H->H) -> ReLU -> dropout -> classifier.

This is the head layout of HF's DistilBertForSequenceClassification (same module names ``pre_classifier`` and
``classifier``). The encoder must be a DistilBERT checkpoint (``model_type == "distilbert"``); a BERT checkpoint is
rejected with a message pointing at :func:`models.convert.bert_to_distilbert`. The offline default encoder is the
exact DistilBERT-architecture conversion of the packaged all-MiniLM-L6-v2 (see :func:`models.registry.resolve_encoder`).
DistilBERT has no token-type embeddings: the ``token_type_ids`` of a sentence pair are ignored (the [SEP] between
the two texts still separates them).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import EncoderClassifier


class DistilBertClassificationHead(nn.Module):
    """[CLS] vector (B, H) -> pre_classifier -> ReLU -> dropout -> classifier (B, C)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.pre_classifier = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        x = self.pre_classifier(cls_state)  # (B, H)
        x = self.activation(x)  # (B, H)
        x = self.dropout(x)  # (B, H)
        return self.classifier(x)  # (B, C)


class DistilBertClassifier(EncoderClassifier):
    """DistilBERT sequence classifier (no family-specific options)."""

    family = "distilbert"
    encoder_types = frozenset({"distilbert"})
    option_names = ()

    def __init__(
        self,
        encoder_config: Any,
        tasks: Mapping[str, Sequence[str]],
        *,
        encoder: nn.Module | None = None,
        **common: Any,
    ):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        self.head = DistilBertClassificationHead(self.hidden_size, len(self.tasks[self.task]), self.dropout_p)
        self.post_init()

    def _task_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        out = self.encode(input_ids, attention_mask, token_type_ids, first_only=True)  # [CLS] alone is read
        hidden = out.last_hidden_state  # (B, T or 1, H)
        return {self.task: self.head(hidden[:, 0])}  # [CLS] (B, H) -> (B, C)
