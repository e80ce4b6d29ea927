"""Multiple choice, encoded: each (context [+ question], choice) pair as one ``[CLS] context [SEP] question choice
[SEP]`` sequence, as transformers' ``run_swag.py`` builds them (the question, SWAG's ``sent2``, starts the second
text; the longer text is truncated first). Shared by training (``ml.mc_training``) and serving (``ml.mc_serving``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from core.task_types.multiple_choice import Example
from ml.batches import Encoded, tokenize
from ml.config import IGNORE_INDEX


def pair_texts(example: Example) -> list[tuple[str, str]]:
    """The (first, second) texts of each of an example's choices."""
    lead = f"{example.question.strip()} " if example.question and example.question.strip() else ""
    return [(example.context, lead + choice) for choice in example.choices]


def encode_pairs(tokenizer: Any, examples: Sequence[Example], max_length: int,
                 check_stop: Callable[[], None] | None = None) -> list[list[tuple[list[int], list[int]]]]:
    """Per example, per choice its (token ids, token type ids), truncated to ``max_length``."""
    firsts, seconds, counts = [], [], []
    for example in examples:
        pairs = pair_texts(example)
        firsts.extend(first for first, _ in pairs)
        seconds.extend(second for _, second in pairs)
        counts.append(len(pairs))
    ids, types = tokenize(tokenizer, firsts, max_length, check_stop, pairs=seconds)
    out, start = [], 0
    for count in counts:
        out.append(list(zip(ids[start:start + count], types[start:start + count])))
        start += count
    return out


class PaddedSize:
    """A row's padded size (choices x its longest choice) standing where the training loop reads a row's token
    list: the loop only takes its ``len`` (token budgets, length buckets), so no list of that many ids is built."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


class ChoiceBatches(Encoded):
    """:class:`ml.batches.Encoded` whose rows are multiple-choice examples: ``pairs[i]`` holds row i's choices as
    (token ids, token type ids); a batch is (B, C, T), padded choices all zeros (attention mask 0: the model masks
    them). ``input_ids[i]`` is only what the training loop measures a row by: its :class:`PaddedSize` (so token
    budgets count what a batch really holds)."""

    def __init__(self, pairs: list[list[tuple[list[int], list[int]]]], labels: list[int], pad_id: int):
        sizes = [PaddedSize(len(row) * max(len(ids) for ids, _ in row)) for row in pairs]
        super().__init__(sizes, {"choice": list(labels)}, pad_id)
        self.pairs = pairs

    def batch(self, rows: Sequence[int]) -> dict[str, Any]:
        return collate_choices([self.pairs[i] for i in rows], self.pad_id,
                               labels=[self.labels["choice"][i] for i in rows])


def collate_choices(rows: Sequence[Sequence[tuple[Sequence[int], Sequence[int]]]], pad_id: int, *,
                    labels: Sequence[int | None] | None = None) -> dict[str, Any]:
    """``input_ids`` / ``attention_mask`` / ``token_type_ids`` (B, C, T) of rows of (ids, types) choices, right
    padded (a row with fewer choices gets all-zero choices), and ``labels`` ``{"choice": (B,)}`` when given."""
    import torch

    choices = max(len(row) for row in rows)
    longest = max(len(ids) for row in rows for ids, _ in row)
    ids = torch.full((len(rows), choices, longest), pad_id, dtype=torch.long)  # (B, C, T)
    mask = torch.zeros((len(rows), choices, longest), dtype=torch.long)  # (B, C, T)
    types = torch.zeros((len(rows), choices, longest), dtype=torch.long)  # (B, C, T)
    for b, row in enumerate(rows):
        for c, (seq, seq_types) in enumerate(row):
            ids[b, c, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[b, c, :len(seq)] = 1
            types[b, c, :len(seq)] = torch.tensor(seq_types, dtype=torch.long)
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if labels is not None:
        batch["labels"] = {"choice": torch.tensor([IGNORE_INDEX if y is None else y for y in labels],
                                                  dtype=torch.long)}  # (B,)
    return batch
