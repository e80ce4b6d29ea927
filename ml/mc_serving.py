"""The multiple-choice backend (``ml.backend``): rows of a context, an optional question and choices in, the chosen
one out.

``encode`` turns each input into one row per choice (a (context [+ question], choice) pair, ``ml.mc_data``, as
training encoded it), so the batching engine batches choices freely -- with the choices of other inputs and of other
jobs' requests; ``forward`` scores each pair alone (the head scores a choice without looking at the others: one logit
per pair, exactly the (B, C) logits' entries); ``results`` regroups each input's logits, in order, and takes the
softmax across its choices: ``{"choice_index", "choice", "scores", "choices"}``.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from core.task_types.multiple_choice import MAX_CHOICES, MIN_CHOICES, NAME, ChoiceInput, Example, result_of

from .backend import Encoded
from .batching import Served
from .mc_data import encode_pairs
from .text_classification import PairRow, _autocast, quantize_linear_layers


def as_example(item: Example | ChoiceInput | Mapping[str, Any]) -> Example:
    """An input as an :class:`Example`: an ``Example``, a classify job's ``ChoiceInput``, or ``{"context",
    "question"?, "choices"}``; ValueError for anything else."""
    if isinstance(item, Example):
        return item
    if isinstance(item, ChoiceInput):
        return item.example()
    if not isinstance(item, Mapping) or not isinstance(item.get("choices"), (list, tuple)):
        raise ValueError("a multiple-choice input is {\"context\", \"question\"?, \"choices\": [...]}")
    choices = [str(c) for c in item["choices"]]
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
        raise ValueError(f"a multiple-choice input needs {MIN_CHOICES} to {MAX_CHOICES} choices, got {len(choices)}")
    return Example(str(item.get("context") or ""), item.get("question"), choices)


class ChoicePredictor(Served):
    """A loaded multiple-choice model as a backend of the batching engine (``model``: a
    ``models.multiple_choice`` model; ``max_length``: what training truncated each pair to)."""

    quantizable = True  # ``ml.inference`` passes its ``quantize`` on (int8 on CPU)

    def __init__(self, model: Any, tokenizer: Any, *, device: str = "cpu", max_length: int = 128,
                 quantized: bool = False):
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device
        self.max_length, self.quantized = int(max_length), quantized
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self._engine = None

    @classmethod
    def load(cls, model_dir: Any, device: str = "cpu", *, quantize: bool = False) -> "ChoicePredictor":
        """The saved multiple-choice model in ``model_dir`` (``models.io.save_model``); ``quantize``: int8 dynamic
        quantization of its Linear layers on CPU (ignored on CUDA, which runs in half precision). ValueError for a
        model of another task type."""
        from models.io import load_model, model_task_type, read_model_config

        config = read_model_config(model_dir)
        if model_task_type(config) != NAME:
            raise ValueError(f"{model_dir} holds a {model_task_type(config)} model, not a multiple-choice one")
        model, tokenizer = load_model(model_dir, device)
        quantized = bool(quantize) and not str(device).startswith("cuda")
        if quantized:
            model = quantize_linear_layers(model)
        return cls(model, tokenizer, device=device, max_length=model.max_length or 128, quantized=quantized)

    def encode(self, inputs: Sequence[Example | ChoiceInput | Mapping[str, Any]],
               pairs: Sequence[str | None] | None = None) -> Encoded:
        """One row per choice of every input (a :class:`PairRow`: token ids and token types). ``pairs`` (what a
        classify job passes as each input's second text: its question) is ignored: the question travels with the
        input itself."""
        examples = [as_example(item) for item in inputs]
        if not examples:
            return Encoded([], [], [])
        pairs = encode_pairs(self.tokenizer, examples, self.max_length)
        rows = [PairRow(ids, types) for per_input in pairs for ids, types in per_input]
        return Encoded(rows, [len(per_input) for per_input in pairs], [e.choices for e in examples])

    def forward(self, rows: list[PairRow]) -> list[float]:
        """One logit per (context, choice) row of one padded batch: each row is scored as a one-choice question,
        (N, 1, T) -> (N, 1), what it would score among its own choices."""
        import torch

        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), 1, longest), self.pad_id, dtype=torch.long)  # (N, 1, T)
        mask = torch.zeros((len(rows), 1, longest), dtype=torch.long)  # (N, 1, T)
        types = torch.zeros((len(rows), 1, longest), dtype=torch.long)  # (N, 1, T)
        for b, row in enumerate(rows):
            ids[b, 0, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, 0, :len(row)] = 1
            types[b, 0, :len(row)] = torch.tensor(row.token_type_ids, dtype=torch.long)
        with self.forward_guard(), torch.inference_mode(), _autocast(self.device):
            logits = self.model(ids.to(self.device), mask.to(self.device),
                                token_type_ids=types.to(self.device)).logits  # (N, 1)
        return logits.float()[:, 0].cpu().tolist()

    def results(self, outputs: list[list[float]], encoded: Encoded | None = None) -> list[dict]:
        """Per input ``{"choice_index", "choice", "scores", "choices"}``: the softmax of its choices' logits."""
        import torch

        choices_per_input: list[list[str]] = encoded.context
        out = []
        for logits, choices in zip(outputs, choices_per_input):
            probabilities = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=0).tolist()
            out.append(result_of(choices, probabilities))
        return out

    def predict(self, inputs: Sequence[Example | Mapping[str, Any]]) -> list[dict]:
        """Results for ``inputs`` through this model's engine (batched with whatever else is in flight)."""
        return self.engine.predict(list(inputs))
