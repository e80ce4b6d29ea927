"""Loss pieces shared by heads whose classes vary per row (multiple choice: the choices a question has; question
answering: the real token positions of a window)."""
from __future__ import annotations

import torch


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-row cross-entropy of (K, C) ``logits`` whose impossible classes are ``-inf`` and (K,) ``target`` ids
    (each a possible class); (K,). Label smoothing spreads its mass over each row's possible classes only, so the
    loss of a row does not change with the padding of its batch (``F.cross_entropy``'s smoothing would take the
    log of the impossible classes: infinite)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (K, C); impossible classes -inf
    nll = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)  # (K,)
    if not smoothing:
        return nll
    possible = torch.isfinite(log_probs)  # (K, C)
    uniform = -log_probs.masked_fill(~possible, 0.0).sum(dim=1) / possible.sum(dim=1)  # (K,)
    return (1.0 - smoothing) * nll + smoothing * uniform


def attached_zero(logits: torch.Tensor) -> torch.Tensor:
    """The loss of a batch with nothing to learn from: 0, still attached to the graph (backward works), never NaN
    (``-inf`` logits times 0 would be)."""
    return logits.masked_fill(torch.isinf(logits), 0.0).sum() * 0.0
