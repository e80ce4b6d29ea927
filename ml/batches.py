"""Tokenizing once and cutting length-bucketed, dynamically padded batches.

Texts are tokenized once (truncated to ``max_length``, no padding; :func:`tokenize`). Batches are *length-bucketed*
(:func:`length_bucketed_batches`): the shuffled training set is cut into chunks of ``BUCKET_CHUNK_BATCHES`` batches,
each chunk is sorted by length and cut into batches, and the batch order is shuffled; every batch is padded only to
its own longest row (dynamic padding, :func:`collate`).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

TOKENIZE_CHUNK = 2048  # texts per tokenizer call: a stop request is seen between chunks
BUCKET_CHUNK_BATCHES = 50  # batches per length-sorted chunk


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, chunk_batches: int = BUCKET_CHUNK_BATCHES
) -> list[list[int]]:
    """Shuffle, sort by length within chunks of ``chunk_batches`` batches, batch, shuffle the batch order.

    Rows of similar length share a batch (little padding) while every epoch still sees a different order.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = max(1, batch_size * chunk_batches)
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def collate(
    input_ids: Sequence[Sequence[int]],
    rows: Sequence[int],
    pad_id: int,
    labels: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Pad the selected rows to their longest (right padding): input_ids / attention_mask (B, T), labels (B,)."""
    import torch

    longest = max(len(input_ids[i]) for i in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (B, T)
    for b, i in enumerate(rows):
        seq = input_ids[i]
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, : len(seq)] = 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if labels is not None:
        batch["labels"] = {t: torch.tensor([y[i] for i in rows], dtype=torch.long) for t, y in labels.items()}
    return batch


def tokenize(tokenizer: Any, texts: list[str], max_length: int,
             check_stop: Callable[[], None] | None = None) -> list[list[int]]:
    """Token ids of every text (truncated, unpadded), in chunks so that a stop request is seen in between."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        if check_stop is not None:
            check_stop()
        ids.extend(tokenizer(
            texts[start : start + TOKENIZE_CHUNK], truncation=True, max_length=max_length, padding=False,
            return_attention_mask=False, return_token_type_ids=False,
        )["input_ids"])
    return ids


def encoder_max_positions(tokenizer: Any, encoder_config: Any) -> int:
    """The longest input the encoder accepts (its position embeddings, and the tokenizer's own limit)."""
    limits = [int(getattr(encoder_config, "max_position_embeddings", 512) or 512)]
    if getattr(encoder_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limits[0] -= 2  # position ids start after the padding index
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 100_000:
        limits.append(model_max)
    return min(limits)
