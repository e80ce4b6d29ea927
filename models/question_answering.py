"""Extractive question answering: a start and an end score for every token, the families' QA heads.

The families read the encoder's per-token states the way HF's ``BertForQuestionAnswering`` /
``DistilBertForQuestionAnswering`` do: one ``qa_outputs`` Linear(H, 2) on every token, split into start and end
logits (DistilBERT's dropout before it included), under ``head.`` (``head.qa_outputs.weight``), so a model is a plain
transformers checkpoint once the prefixes are renamed (``core.hf_format``, from the task type's ``HFHead``).

The model has one task (:data:`TASK`, labels ``start`` / ``end``). Labels are (B, 2) token positions of the answer's
first and last token (an unanswerable window points both at ``[CLS]``, position 0), as transformers' ``run_qa.py``;
the loss is the mean of the start and end cross-entropies. ``logits`` are (B, T, 2) -- start, end -- for the shared
training loop, ``start_logits`` / ``end_logits`` (B, T) as HF's output names them; unlike HF's, a padded position's
are ``-inf`` (nobody's answer), so the loss and its label smoothing cover each window's real positions only.
Shape legend: B batch, T tokens, H encoder hidden size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import BERT_LIKE_TYPES, EncoderClassifier
from .losses import attached_zero, masked_cross_entropy

TASK_TYPE = "question-answering"
TASK = "answer"
LABELS = ("start", "end")


@dataclass
class QuestionAnsweringOutput:
    """``loss`` (None without labels), ``logits`` (B, T, 2), ``start_logits`` / ``end_logits`` (B, T)."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    start_logits: torch.Tensor
    end_logits: torch.Tensor


class SpanHead(nn.Module):
    """(dropout ->) ``qa_outputs`` Linear(H, 2) on every token: (B, T, H) -> (B, T, 2), start and end."""

    def __init__(self, hidden_size: int, dropout: float | None):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout is not None else nn.Identity()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.qa_outputs(self.dropout(states))  # (B, T, H) -> (B, T, 2)


class QuestionAnswerer(EncoderClassifier):
    """Encoder -> (dropout) -> ``qa_outputs`` Linear(H, 2) per token. ``no_answer``: whether the model was trained with
    unanswerable questions (then an answer at ``[CLS]`` that scores best means "no answer")."""

    task_type = TASK_TYPE
    family = "bert"
    encoder_types = BERT_LIKE_TYPES
    supports_multi_label = False
    option_names = ("no_answer",)
    head_dropout = False  # BertForQuestionAnswering has no dropout before qa_outputs; DistilBERT's has one

    def __init__(self, encoder_config: Any, tasks: Mapping[str, Sequence[str]] | None = None, *,
                 encoder: nn.Module | None = None, no_answer: bool = False, **common: Any):
        super().__init__(encoder_config, tasks or {TASK: list(LABELS)}, encoder=encoder, **common)
        if len(self.tasks[self.task]) != 2:  # start, end (an imported checkpoint may call them LABEL_0, LABEL_1)
            raise ValueError(f"a question-answering model has one task with 2 labels (start, end), got "
                             f"{dict(self.tasks)}")
        self.no_answer = bool(no_answer)
        # what inference must repeat, recorded by the trainer and saved with the model (``models.io``): the context
        # windows' overlap (doc_stride); ``scheme`` is a token model's and stays None
        self.stride: int | None = None
        self.scheme: str | None = None
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # unused: BertForQuestionAnswering's BertModel(add_pooling_layer=False)
        self.head = SpanHead(self.hidden_size, self.dropout_p if self.head_dropout else None)
        self.post_init()

    def head_options(self) -> dict[str, Any]:
        return {"no_answer": self.no_answer}

    def _task_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        states = self.encode(input_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, H)
        padding = ~attention_mask.bool()[..., None]  # (B, T, 1)
        # a padded position is nobody's start or end: -inf, so the loss (and its smoothing) sees the window's real
        # positions only, whatever the batch's padding (the serving path cuts the padding off before reading)
        return {self.task: self.head(states).masked_fill(padding, float("-inf"))}  # (B, T, 2)

    def task_loss(self, task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(CE(start) + CE(end)) / 2 over (B, T, 2) logits (padded positions ``-inf``) and (B, 2) positions; label
        smoothing spreads over each window's real positions only. A position past the window (never made by
        ``ml.qa_features``) is clamped to T and its row ignored, as in HF, and so is one on the window's padding; with
        no row left the side gives 0."""
        labels = labels.to(logits.device).long()  # (B, 2)
        if labels.ndim != 2 or labels.shape != (logits.shape[0], 2):
            raise ValueError(f"question-answering labels must have shape ({logits.shape[0]}, 2), got "
                             f"{tuple(labels.shape)}")
        width = logits.shape[1]
        positions = labels.clamp(0, width)  # (B, 2)
        sides = []
        for side in (0, 1):  # start, end
            side_logits, target = logits[..., side], positions[:, side]  # (B, T), (B,)
            # a position on the window's padding (HF-style start/end positions can name one) is no answer either
            on_token = torch.isfinite(side_logits.gather(1, target.clamp(max=width - 1)[:, None]))[:, 0]  # (B,)
            kept = (target != width) & on_token  # (B,)
            if bool(kept.any()):
                sides.append(masked_cross_entropy(side_logits[kept], target[kept], self.label_smoothing).mean())
            else:
                sides.append(attached_zero(side_logits))
        return (sides[0] + sides[1]) / 2

    def loss_denominator(self, task: str, labels: torch.Tensor) -> float:
        return float(labels.shape[0])  # the loss is a mean over rows

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
                token_type_ids: torch.Tensor | None = None, start_positions: torch.Tensor | None = None,
                end_positions: torch.Tensor | None = None) -> QuestionAnsweringOutput:
        """Start / end logits of a padded batch; ``labels`` (B, 2) (or ``{"answer": (B, 2)}``), or HF's
        ``start_positions`` / ``end_positions`` (B,), give the loss."""
        logits = self._task_logits(input_ids, attention_mask, token_type_ids)[self.task]  # (B, T, 2)
        if labels is None and start_positions is not None and end_positions is not None:
            labels = torch.stack([start_positions.long(), end_positions.long()], dim=1)  # (B, 2)
        loss = self.compute_loss({self.task: logits}, labels) if labels is not None else None
        return QuestionAnsweringOutput(loss=loss, logits=logits, start_logits=logits[..., 0],
                                       end_logits=logits[..., 1])


class DistilBertQuestionAnswerer(QuestionAnswerer):
    """DistilBERT encoder -> dropout -> ``qa_outputs`` (HF ``DistilBertForQuestionAnswering``)."""

    family = "distilbert"
    encoder_types = frozenset({"distilbert"})
    head_dropout = True


FAMILIES: dict[str, type[QuestionAnswerer]] = {
    "bert": QuestionAnswerer,
    "distilbert": DistilBertQuestionAnswerer,
}
