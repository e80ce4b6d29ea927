"""Tokenizing once and cutting length-bucketed, dynamically padded batches.

Texts are tokenized once (truncated to ``max_length``, no padding; :func:`tokenize`). Batches are *length-bucketed*
(:func:`length_bucketed_batches`): the shuffled training set is cut into chunks of ``BUCKET_CHUNK_BATCHES`` batches,
each chunk is sorted by length and cut into batches, and the batch order is shuffled; every batch is padded only to
its own longest row (dynamic padding, :func:`collate`). Sentence pairs are encoded as one sequence with token
type ids; multi-label targets become float multi-hot rows.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    labels: Mapping[str, Sequence[Any]] | None = None,
    *,
    token_type_ids: Sequence[Sequence[int]] | None = None,
    multi_label: bool = False,
) -> dict[str, Any]:
    """Pad the selected rows to their longest (right padding).

    Returns ``input_ids`` / ``attention_mask`` (B, T), ``token_type_ids`` (B, T; padded with 0) when given, and
    ``labels`` ``{task: (B,) long}`` -- or, ``multi_label``, ``{task: (B, C) float}`` multi-hot targets.
    """
    import torch

    longest = max(len(input_ids[i]) for i in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (B, T)
    types = torch.zeros((len(rows), longest), dtype=torch.long) if token_type_ids is not None else None  # (B, T)
    for b, i in enumerate(rows):
        seq = input_ids[i]
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, : len(seq)] = 1
        if types is not None:
            types[b, : len(seq)] = torch.tensor(token_type_ids[i], dtype=torch.long)
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    if labels is not None:
        dtype = torch.float32 if multi_label else torch.long
        batch["labels"] = {t: torch.tensor([y[i] for i in rows], dtype=dtype) for t, y in labels.items()}
    return batch


@dataclass
class Encoded:
    """Tokenized examples ready to batch: token ids (and pair segment ids), labels per task, the padding id."""

    input_ids: list[list[int]]
    labels: dict[str, list[Any]]
    pad_id: int
    token_type_ids: list[list[int]] | None = None
    multi_label: bool = False

    def batch(self, rows: Sequence[int]) -> dict[str, Any]:
        """The padded batch of ``rows`` (see :func:`collate`)."""
        return collate(self.input_ids, rows, self.pad_id, self.labels, token_type_ids=self.token_type_ids,
                       multi_label=self.multi_label)

    def predictions(self, logits: Any, rows: Sequence[int]) -> list[Any]:
        """What an evaluation keeps per row of ``rows`` from one task's logits: the label id (argmax), or the
        per-label sigmoid probabilities of a multi-label task. A task type whose rows need more (question
        answering: every token's start / end logits) overrides it."""
        import torch

        return (torch.sigmoid(logits.float()) if self.multi_label else logits.argmax(dim=-1)).tolist()

    def model_inputs(self, batch: Mapping[str, Any], device: str) -> dict[str, Any]:
        """The batch's tensors as the model's keyword arguments, on ``device`` (pinned, non-blocking copies on CUDA:
        :func:`ml.precision.to_device`)."""
        from ml.precision import to_device

        inputs = {"input_ids": to_device(batch["input_ids"], device),
                  "attention_mask": to_device(batch["attention_mask"], device),
                  "labels": {t: to_device(y, device) for t, y in batch["labels"].items()}}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = to_device(batch["token_type_ids"], device)
        return inputs


def tokenize(tokenizer: Any, texts: list[str], max_length: int, check_stop: Callable[[], None] | None = None,
             pairs: list[str] | None = None) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids of every text (truncated, unpadded), in chunks so that a stop request is seen in between.

    With ``pairs`` each row is encoded as one pair (``[CLS] a [SEP] b [SEP]``), the longer text truncated first,
    and its token type ids (0 = first text, 1 = second) are returned too; else they are ``None``.
    """
    ids: list[list[int]] = []
    types: list[list[int]] | None = [] if pairs is not None else None
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        if check_stop is not None:
            check_stop()
        chunk = texts[start : start + TOKENIZE_CHUNK]
        if pairs is None:
            ids.extend(tokenizer(chunk, truncation=True, max_length=max_length, padding=False,
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"])
            continue
        encoded = tokenizer(chunk, pairs[start : start + TOKENIZE_CHUNK], truncation="longest_first",
                            max_length=max_length, padding=False, return_attention_mask=False,
                            return_token_type_ids=True)
        ids.extend(encoded["input_ids"])
        types.extend(encoded["token_type_ids"])
    return ids, types


def encoder_max_positions(tokenizer: Any, encoder_config: Any) -> int:
    """The longest input the encoder accepts (its position embeddings, and the tokenizer's own limit)."""
    limits = [int(getattr(encoder_config, "max_position_embeddings", 512) or 512)]
    if getattr(encoder_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limits[0] -= 2  # position ids start after the padding index
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 100_000:
        limits.append(model_max)
    return min(limits)
