"""Token classification (named entities, part-of-speech tags): one label per token, the families' token heads.

The families read the encoder's per-token states the way HF's ``BertForTokenClassification`` /
``DistilBertForTokenClassification`` do (dropout -> linear on every token; module names ``head.classifier``), so a
``bert`` or ``distilbert`` token model is a plain transformers checkpoint once its keys are renamed; ``bert_lstm`` runs
a (bi)LSTM over the token states first, the classic neural tagger.

Labels are (B, T) tag ids with ``-100`` on every position that is not scored (special tokens, padding, every
sub-token of a word after its first), as in transformers' ``run_ner.py``; logits are (B, T, C).
Shape legend: B batch, T tokens, H encoder hidden size, L LSTM hidden size, D directions, C tags.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_packed_sequence

from .base import BERT_LIKE_TYPES, IGNORE_INDEX, EncoderClassifier, packed_lstm

TASK_TYPE = "token-classification"


class TokenTaggingHead(nn.Module):
    """dropout -> linear on every token's state: (B, T, H) -> (B, T, C)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(states))  # (B, T, H) -> (B, T, C)


class TokenClassifier(EncoderClassifier):
    """The shared part of the token families: one task (the tag set), a per-token loss, no multi-label."""

    task_type = TASK_TYPE
    supports_multi_label = False

    def __init__(self, encoder_config: Any, tasks: Mapping[str, Sequence[str]], *, encoder: nn.Module | None = None,
                 **common: Any):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        # what inference must repeat, recorded by the trainer and saved with the model (``models.io``): the windows'
        # overlap (``max_length`` is the base class's) and the tag scheme the entities are decoded with
        self.stride: int | None = None
        self.scheme: str | None = None
        if getattr(self.encoder, "pooler", None) is not None:
            # unused by a token head: dropping it saves its compute and keeps the state dict in the layout of
            # BertForTokenClassification (BertModel(add_pooling_layer=False))
            self.encoder.pooler = None

    def task_loss(self, task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the scored positions (tag id != -100) of (B, T, C) logits and (B, T) labels, with the
        class weights and label smoothing; a batch without a scored position gives 0 (attached), never NaN."""
        weight = getattr(self, self._weight_buffer[task]) if task in self._weight_buffer else None
        labels = labels.to(logits.device).long()  # (B, T)
        if labels.shape != logits.shape[:2]:
            raise ValueError(f"token labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
        if not bool((labels != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), weight=weight,
                               ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)  # (B*T, C), (B*T,)


class BertTokenClassifier(TokenClassifier):
    """BERT-like encoder -> dropout -> linear per token (HF ``BertForTokenClassification``)."""

    family = "bert"
    encoder_types = BERT_LIKE_TYPES

    def __init__(self, encoder_config: Any, tasks: Mapping[str, Sequence[str]], *, encoder: nn.Module | None = None,
                 **common: Any):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        self.head = TokenTaggingHead(self.hidden_size, len(self.tasks[self.task]), self.dropout_p)
        self.post_init()

    def _task_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        states = self.encode(input_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, H)
        return {self.task: self.head(states)}  # (B, T, C)


class DistilBertTokenClassifier(BertTokenClassifier):
    """DistilBERT encoder -> dropout -> linear per token (HF ``DistilBertForTokenClassification``)."""

    family = "distilbert"
    encoder_types = frozenset({"distilbert"})


class LSTMTaggingHead(nn.Module):
    """Token states (B, T, H) -> (bi)LSTM over the real tokens (B, T, D*L) -> dropout -> linear (B, T, C).

    The states are packed by length (right padding), so padding never feeds the LSTM: adding padding to a batch
    changes no real token's logits."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, lstm_hidden: int, bidirectional: bool):
        super().__init__()
        self.lstm = nn.LSTM(hidden_size, lstm_hidden, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(lstm_hidden * (2 if bidirectional else 1), num_labels)

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        output, _ = packed_lstm(self.lstm, states, lengths)  # fp32
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=states.shape[1])  # (B, T, D*L)
        return self.classifier(self.dropout(output))  # (B, T, C)


class BertLSTMTokenClassifier(TokenClassifier):
    """Encoder -> (bi)LSTM over every token -> per-token linear. Options: ``lstm_hidden``, ``bidirectional``."""

    family = "bert_lstm"
    encoder_types = BERT_LIKE_TYPES | {"distilbert"}
    option_names = ("lstm_hidden", "bidirectional")

    def __init__(self, encoder_config: Any, tasks: Mapping[str, Sequence[str]], *, encoder: nn.Module | None = None,
                 lstm_hidden: int = 256, bidirectional: bool = True, **common: Any):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        if int(lstm_hidden) < 1:
            raise ValueError(f"lstm_hidden must be >= 1, got {lstm_hidden}")
        self.lstm_hidden, self.bidirectional = int(lstm_hidden), bool(bidirectional)
        self.head = LSTMTaggingHead(self.hidden_size, len(self.tasks[self.task]), self.dropout_p, self.lstm_hidden,
                                    self.bidirectional)
        self.post_init()

    def head_options(self) -> dict[str, Any]:
        return {"lstm_hidden": self.lstm_hidden, "bidirectional": self.bidirectional}

    def _task_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        states = self.encode(input_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, H)
        lengths = attention_mask.sum(dim=1).clamp(min=1)  # (B,) real tokens per row
        return {self.task: self.head(states, lengths)}  # (B, T, C)


FAMILIES: dict[str, type[TokenClassifier]] = {
    "bert": BertTokenClassifier,
    "distilbert": DistilBertTokenClassifier,
    "bert_lstm": BertLSTMTokenClassifier,
}
