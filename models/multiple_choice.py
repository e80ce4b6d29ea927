"""Multiple choice (SWAG-style): one score per (context, choice) pair, a softmax across a row's choices.

The heads are Hugging Face's: ``bert`` is ``BertForMultipleChoice`` (the encoder's pooler -> dropout ->
``classifier`` Linear(H, 1)), ``distilbert`` is ``DistilBertForMultipleChoice`` ([CLS] -> ``pre_classifier``
Linear(H, H) -> ReLU -> dropout -> ``classifier`` Linear(H, 1)); module names ``encoder.*`` and ``head.*``, so a
model is a plain transformers checkpoint once its keys are renamed.

Input is (B, C, T): row b's choice c is one encoded pair. Rows may have fewer choices than C: a padded choice has
an all-zero attention mask, is never run through the encoder, and its logit is ``-inf``, so the softmax gives it
probability 0 and the loss never reads it. Labels are (B,) choice positions (``-100``: no label); logits (B, C).
The model's one task is ``choice``, its labels the positions ``"0"``, ``"1"``, ... seen in training (the heads
score any number of choices: the label list only names what the model was trained on).
Shape legend: B rows, C choices, T tokens, N real (row, choice) pairs, H encoder hidden size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import BERT_LIKE_TYPES, IGNORE_INDEX, ClassifierOutput, EncoderClassifier
from .bert import BertClassificationHead, encoder_has_pooler
from .distilbert import DistilBertClassificationHead
from .losses import attached_zero, masked_cross_entropy

TASK_TYPE = "multiple-choice"


class MultipleChoiceModel(EncoderClassifier):
    """The shared part of the multiple-choice families: (B, C, T) in, one logit per real choice, padded ones
    ``-inf``; cross-entropy across each row's real choices."""

    task_type = TASK_TYPE
    supports_multi_label = False

    def __init__(self, encoder_config: Any, tasks: Mapping[str, Sequence[str]], *, encoder: nn.Module | None = None,
                 **common: Any):
        if common.get("class_weights") is not None:
            raise ValueError("class_weights do not apply to multiple choice: the labels are choice positions")
        super().__init__(encoder_config, tasks, encoder=encoder, **common)

    def _pair_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """One logit per encoded pair: (N, T) -> (N,)."""
        raise NotImplementedError

    def _task_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if input_ids.dim() != 3:
            raise ValueError(f"multiple-choice input must be (rows, choices, tokens), got {tuple(input_ids.shape)}")
        rows, choices, tokens = input_ids.shape
        real = attention_mask.sum(dim=-1) > 0  # (B, C): a padded choice has no token at all
        flat_real = real.reshape(-1)  # (B*C,)
        types = token_type_ids.reshape(-1, tokens)[flat_real] if token_type_ids is not None else None  # (N, T)
        scores = self._pair_logits(input_ids.reshape(-1, tokens)[flat_real],
                                   attention_mask.reshape(-1, tokens)[flat_real], types)  # (N,)
        logits = torch.full((rows * choices,), float("-inf"), dtype=scores.dtype, device=scores.device)  # (B*C,)
        logits = logits.masked_scatter(flat_real, scores)  # (B*C,): real pairs in row-major order
        return {self.task: logits.view(rows, choices)}  # (B, C)

    def task_loss(self, task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of (B, C) logits (padded choices ``-inf``) and (B,) positions, over the rows with a label;
        label smoothing spreads its mass over each row's real choices only. A batch without a label gives 0."""
        labels = labels.to(logits.device).long()  # (B,)
        known = labels != IGNORE_INDEX  # (B,)
        if not bool(known.any()):
            return attached_zero(logits)
        # logits (K, C), padded choices -inf; labels (K,)
        return masked_cross_entropy(logits[known], labels[known], self.label_smoothing).mean()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
                token_type_ids: torch.Tensor | None = None) -> ClassifierOutput:
        """Score a padded batch: input_ids / attention_mask / token_type_ids (B, C, T); labels (B,) positions."""
        return super().forward(input_ids, attention_mask, labels=labels, token_type_ids=token_type_ids)


class BertMultipleChoice(MultipleChoiceModel):
    """BERT-like encoder -> pooler -> dropout -> Linear(H, 1) per pair (HF ``BertForMultipleChoice``)."""

    family = "bert"
    encoder_types = BERT_LIKE_TYPES

    def __init__(self, encoder_config: Any, tasks: Mapping[str, Sequence[str]], *, encoder: nn.Module | None = None,
                 **common: Any):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        if not encoder_has_pooler(self.encoder):
            raise ValueError("the bert multiple-choice head reads the encoder's pooler (as BertForMultipleChoice): "
                             "this encoder has none")
        self.head = BertClassificationHead(self.hidden_size, 1, self.dropout_p)
        self.post_init()

    def _pair_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None) -> torch.Tensor:
        pooled = self.encode(input_ids, attention_mask, token_type_ids, first_only=True).pooler_output  # (N, H)
        return self.head(pooled).squeeze(-1)  # (N, 1) -> (N,)


class DistilBertMultipleChoice(MultipleChoiceModel):
    """DistilBERT -> [CLS] -> pre_classifier -> ReLU -> dropout -> Linear(H, 1) (HF ``DistilBertForMultipleChoice``)."""

    family = "distilbert"
    encoder_types = frozenset({"distilbert"})

    def __init__(self, encoder_config: Any, tasks: Mapping[str, Sequence[str]], *, encoder: nn.Module | None = None,
                 **common: Any):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        self.head = DistilBertClassificationHead(self.hidden_size, 1, self.dropout_p)
        self.post_init()

    def _pair_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None) -> torch.Tensor:
        out = self.encode(input_ids, attention_mask, token_type_ids, first_only=True)  # [CLS] alone is read
        hidden = out.last_hidden_state  # (N, T or 1, H)
        return self.head(hidden[:, 0]).squeeze(-1)  # [CLS] (N, H) -> (N, 1) -> (N,)


FAMILIES: dict[str, type[MultipleChoiceModel]] = {
    "bert": BertMultipleChoice,
    "distilbert": DistilBertMultipleChoice,
}
