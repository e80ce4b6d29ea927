"""``bert_lstm`` family: encoder -> LSTM over the token states -> dropout -> linear.

The sequence summary is the LSTM state at each row's last *real* token: the token states are packed with
``pack_padded_sequence`` (lengths from ``attention_mask``), so the forward direction stops at the last real token
and the backward direction starts there; padding positions are never fed to the LSTM, and adding padding to a batch
does not change any row's logits. Inputs must be right-padded (what the tokenizers here produce).
Options: ``lstm_hidden`` (default 256), ``bidirectional`` (default True).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import BERT_LIKE_TYPES, EncoderClassifier, packed_lstm


class LSTMClassificationHead(nn.Module):
    """Token states (B, T, H) + lengths (B,) -> final LSTM state(s) (B, D*L) -> dropout -> linear (B, C)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, lstm_hidden: int, bidirectional: bool):
        super().__init__()
        self.lstm = nn.LSTM(hidden_size, lstm_hidden, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(lstm_hidden * (2 if bidirectional else 1), num_labels)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = packed_lstm(self.lstm, hidden, lengths)  # h_n: (D, B, L), fp32, rows in input order
        summary = torch.cat(list(h_n), dim=-1)  # (B, D*L): [forward final state, backward final state]
        return self.classifier(self.dropout(summary))  # (B, C)


class BertLSTMClassifier(EncoderClassifier):
    """Encoder + (bi)LSTM sequence classifier. Options: ``lstm_hidden``, ``bidirectional``."""

    family = "bert_lstm"
    encoder_types = BERT_LIKE_TYPES | {"distilbert"}
    option_names = ("lstm_hidden", "bidirectional")

    def __init__(
        self,
        encoder_config: Any,
        tasks: Mapping[str, Sequence[str]],
        *,
        encoder: nn.Module | None = None,
        lstm_hidden: int = 256,
        bidirectional: bool = True,
        **common: Any,
    ):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        if int(lstm_hidden) < 1:
            raise ValueError(f"lstm_hidden must be >= 1, got {lstm_hidden}")
        self.lstm_hidden = int(lstm_hidden)
        self.bidirectional = bool(bidirectional)
        self.head = LSTMClassificationHead(
            self.hidden_size, len(self.tasks[self.task]), self.dropout_p, self.lstm_hidden, self.bidirectional
        )
        self.post_init()

    def head_options(self) -> dict[str, Any]:
        return {"lstm_hidden": self.lstm_hidden, "bidirectional": self.bidirectional}

    def _task_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        hidden = self.encode(input_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, H)
        lengths = attention_mask.sum(dim=1).clamp(min=1)  # (B,) real tokens per row (right padding)
        return {self.task: self.head(hidden, lengths)}  # (B, C)
