"""``multitask`` family: one shared encoder, one linear head per task.

forward(labels={task: (B,)}) -> loss = sum_t task_weights[t] * CE_t, where CE_t only counts rows whose label for
task t is not -100 (a row may lack some labels) and is 0 (not NaN) when no row of the batch has a label for t.
Logits are a ``{task: (B, C_t)}`` dict. Options: ``pooling`` (as the ``bert`` family), ``task_weights``
(``{task: w}``, default 1.0 each). Separate encoder / head learning rates come from
:meth:`EncoderClassifier.parameter_groups`, as for every family. Every task is single-label: ``multi_label=True`` is
refused with a ValueError.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import BERT_LIKE_TYPES, EncoderClassifier, pool_hidden_states, pools_first_position
from .bert import resolve_pooling


class MultiTaskHeads(nn.Module):
    """dropout, then one linear layer per task, on the shared pooled vector (B, H)."""

    def __init__(self, hidden_size: int, num_labels: Sequence[int], dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        # keyed by position ("0", "1", ...) since task names (CSV column names) may contain any character
        self.classifiers = nn.ModuleList([nn.Linear(hidden_size, n) for n in num_labels])

    def forward(self, pooled: torch.Tensor) -> list[torch.Tensor]:
        x = self.dropout(pooled)  # (B, H)
        return [classifier(x) for classifier in self.classifiers]  # [(B, C_t) per task]


class MultiTaskClassifier(EncoderClassifier):
    """Shared-encoder multi-task classifier. Options: ``pooling``, ``task_weights``."""

    family = "multitask"
    encoder_types = BERT_LIKE_TYPES | {"distilbert"}
    multitask = True
    supports_multi_label = False  # several single-label tasks; multi_label=True is refused (ValueError)
    option_names = ("pooling", "task_weights")

    def __init__(
        self,
        encoder_config: Any,
        tasks: Mapping[str, Sequence[str]],
        *,
        encoder: nn.Module | None = None,
        pooling: str | None = None,
        task_weights: Mapping[str, float] | None = None,
        **common: Any,
    ):
        super().__init__(encoder_config, tasks, encoder=encoder, **common)
        self.pooling = resolve_pooling(pooling, self.encoder)
        unknown = set(task_weights or {}) - set(self.tasks)
        if unknown:
            raise ValueError(f"task_weights names unknown tasks: {', '.join(sorted(unknown))}")
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in self.tasks}
        if any(not math.isfinite(w) or w < 0 for w in self.task_weights.values()):
            raise ValueError(f"task_weights must be finite and >= 0: {self.task_weights}")
        self.heads = MultiTaskHeads(self.hidden_size, [len(labels) for labels in self.tasks.values()], self.dropout_p)
        self.post_init()

    def head_options(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "task_weights": dict(self.task_weights)}

    def _task_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        out = self.encode(input_ids, attention_mask, token_type_ids, first_only=pools_first_position(self.pooling))
        pooled = pool_hidden_states(
            self.pooling, out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None)
        )  # (B, H)
        return dict(zip(self.tasks, self.heads(pooled)))  # {task: (B, C_t)}

    def compute_loss(
        self, logits: dict[str, torch.Tensor], labels: torch.Tensor | Mapping[str, torch.Tensor],
        task_scale: Mapping[str, float] | None = None,
    ) -> torch.Tensor:
        """Weighted sum of the per-task losses; a task missing from ``labels`` contributes nothing.
        ``task_scale``: an extra factor per task (gradient accumulation, see the base class)."""
        if not isinstance(labels, Mapping):
            raise TypeError("multitask labels must be a {task: (B,) tensor} dict")
        unknown = set(labels) - set(self.tasks)
        if unknown:
            raise ValueError(f"labels for unknown tasks: {', '.join(sorted(unknown))}")
        total = sum(logits_t.sum() * 0.0 for logits_t in logits.values())  # 0 attached to the graph
        for task, task_labels in labels.items():
            scale = task_scale[task] if task_scale is not None else 1.0
            total = total + self.task_weights[task] * scale * self.task_loss(task, logits[task], task_labels)
        return total
