"""Text classification served: the loaded classifier as the batching engine's narrow backend (``ml.backend``).

``Predictor.predict(texts, pairs=None)`` tokenizes everything once (as training did: the same text normalization,
sentence pairs as one ``[CLS] a [SEP] b [SEP]`` sequence with token type ids, truncated to the model's training
``max_length``), sorts by length, and packs rows into batches whose padded size (rows x longest row) stays under
``max_batch_tokens`` and ``max_batch_size`` rows (as text-embeddings-inference does), runs them under
``torch.inference_mode``, applies softmax (multi-label: a sigmoid per label) and returns the results in input order.
A multi-label model's result lists every label whose probability reaches that label's stored threshold.

One text (or sentence pair) is one row, so :meth:`Predictor.encode` returns a plain list of rows. ``forward`` is
serialised per model by a lock. The per-process cache of loaded predictors is ``ml.inference``; every job in a
worker process reaches a model through its :attr:`Predictor.engine` (``ml.batching``), which batches the texts of
concurrent jobs together.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ml.batching import EngineOptions, Served, token_budget_batches

DEFAULT_MAX_LENGTH = 128  # only for a saved model that recorded none


class PairRow(list):
    """The token ids of a sentence pair (a list, like a single text's row) carrying its ``token_type_ids``.

    The batching engine only looks at a row's ids and length, so pair rows and single-text rows travel through it
    alike; :meth:`Predictor.forward` gives a single-text row token type 0 everywhere, which is exactly what the
    encoder assumes without token types, so a batch mixing both gives every row the result it gets alone.
    """

    __slots__ = ("token_type_ids",)

    def __init__(self, input_ids: list[int], token_type_ids: list[int]):
        super().__init__(input_ids)
        self.token_type_ids = list(token_type_ids)


class Predictor(Served):
    """A loaded classifier ready to label texts. Build with :meth:`load` (or :func:`get_predictor`).

    The narrow backend (``ml.backend``) the batching engine drives: :meth:`encode` (texts, pair texts -> one token-id
    row per text), :meth:`forward` (a batch of rows -> probabilities per task, as columns ``{task: [per row]}``) and
    :meth:`results` (per text ``{task: probabilities}`` -> labels).
    :meth:`predict` is the same pipeline for one caller, without the engine.

    ``metadata``: the saved model's ``metadata`` (``models.io``); its ``training`` config says how texts were
    prepared (``text_normalization``, ``text_pair_column``), and inference prepares them the same way.
    """

    family: str
    tasks: dict[str, list[str]]
    is_multitask: bool
    multi_label: bool
    thresholds: list[float] | None

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str = "cpu",
        model_dir: str | Path | None = None,
        *,
        quantized: bool = False,
        metadata: dict[str, Any] | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.quantized = quantized
        self.family = model.family
        self.tasks = {task: list(labels) for task, labels in model.tasks.items()}
        self.is_multitask = bool(model.is_multitask)
        self.multi_label = bool(getattr(model, "multi_label", False))
        self.thresholds = list(model.thresholds) if self.multi_label else None
        self.max_length = int(model.max_length or DEFAULT_MAX_LENGTH)
        training = (metadata or {}).get("training") or {}
        self.text_normalization = training.get("text_normalization") or "none"
        self.text_pair_column = training.get("text_pair_column")  # trained on sentence pairs when set
        self.takes_token_types = bool(getattr(model, "takes_token_types", False))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self._engine = None

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", *, quantize: bool = False) -> "Predictor":
        """Load a model saved by ``models.io.save_model`` onto ``device``.

        ``quantize``: int8 dynamic quantization of every ``nn.Linear`` (weights int8, activations quantized on
        the fly). CPU only: on CUDA the model runs in half precision instead, so the flag is ignored there.
        """
        from models.io import load_model, read_model_config

        model, tokenizer = load_model(model_dir, device=device)
        metadata = read_model_config(model_dir).get("metadata") or {}
        quantized = bool(quantize) and not str(device).startswith("cuda")
        if quantized:
            model = quantize_linear_layers(model)
        return cls(model, tokenizer, device=device, model_dir=model_dir, quantized=quantized, metadata=metadata)

    # ---------------------------------------------------------------- the narrow backend

    def encode(
        self, texts: list[str], max_length: int | None = None, *, pairs: list[str] | None = None
    ) -> list[list[int]]:
        """Token-id rows, truncated to the model's training ``max_length`` (no padding), as training made them.

        ``pairs``: the second text of each row (sentence-pair models): each row becomes one ``[CLS] a [SEP] b
        [SEP]`` sequence (the longer text truncated first), a :class:`PairRow` carrying its token type ids when
        the encoder uses them.
        """
        from ml.batches import tokenize
        from ml.data import normalize_text

        texts = _text_list(texts, "texts")
        if pairs is not None:
            pairs = _text_list(pairs, "pairs")
            if len(pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(pairs)} pair texts: give one pair text per text")
        if not texts:
            return []
        texts = [normalize_text(t, self.text_normalization) for t in texts]
        if pairs is not None:
            pairs = [normalize_text(t, self.text_normalization) for t in pairs]
        ids, types = tokenize(self.tokenizer, texts, int(max_length or self.max_length), pairs=pairs)
        if types is None or not self.takes_token_types:
            return ids
        return [PairRow(row, row_types) for row, row_types in zip(ids, types)]

    def forward(self, rows: list[list[int]]) -> dict[str, list[list[float]]]:
        """Probabilities ``{task: [[p per label] per row]}`` for one batch of rows (any order/lengths).

        Single-label: softmax over the labels; multi-label: an independent sigmoid per label. Rows may mix sentence
        pairs (:class:`PairRow`) and single texts (token type 0 throughout).
        """
        import torch

        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (B, T)
        with_types = any(isinstance(row, PairRow) for row in rows)
        types = torch.zeros((len(rows), longest), dtype=torch.long) if with_types else None  # (B, T)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, : len(row)] = 1
            if types is not None and isinstance(row, PairRow):
                types[b, : len(row)] = torch.tensor(row.token_type_ids, dtype=torch.long)
        extra = {"token_type_ids": types.to(self.device)} if types is not None else {}
        with self.forward_guard(), torch.inference_mode(), _autocast(self.device):
            logits = self.model(ids.to(self.device), mask.to(self.device), **extra).logits
        if not isinstance(logits, dict):
            logits = {next(iter(self.tasks)): logits}
        # probabilities in fp32 whatever precision the model ran in
        if self.multi_label:
            return {task: torch.sigmoid(task_logits.float()).cpu().tolist() for task, task_logits in logits.items()}
        return {task: torch.softmax(task_logits.float(), dim=-1).cpu().tolist() for task, task_logits in logits.items()}

    def results(self, probabilities: list[dict[str, list[float]]], encoded: Any = None) -> list[dict]:
        """Per-text ``{task: probs}`` -> the public result shape (see :meth:`predict`). ``encoded`` (the rows, as
        the backend interface passes them) is not needed: a text's probabilities say everything."""
        out = []
        for probs in probabilities:
            if self.multi_label:
                out.append(_multi_label_result(self.tasks[self.task], probs[self.task], self.thresholds))
                continue
            per_task = {task: _label_result(self.tasks[task], probs[task]) for task in self.tasks}
            out.append({"tasks": per_task} if self.is_multitask else next(iter(per_task.values())))
        return out

    @property
    def task(self) -> str:
        """The first (single-task models: the only) task."""
        return next(iter(self.tasks))

    # ---------------------------------------------------------------- one caller, no engine

    def predict(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        *,
        max_length: int | None = None,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
    ) -> list[dict]:
        """Classify ``texts`` (with ``pairs``: the pairs ``(texts[i], pairs[i])``); one result per text, in input
        order (length-sorted, token-budgeted batches).

        Single-task: ``{"label", "score", "scores": {label: probability}}``.
        Multitask: ``{"tasks": {task: {"label", "score", "scores"}}}``.
        Multi-label: ``{"labels": [every label with p >= its threshold, most likely first], "scores": {label: p},
        "label", "score"}`` (``label``/``score``: the most likely label, whether or not it passed its threshold).
        """
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
        encoded = self.encode(texts, max_length, pairs=pairs)
        if not encoded:
            return []
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        probabilities: list[dict[str, list[float]] | None] = [None] * len(encoded)
        for batch in token_budget_batches(order, [len(e) for e in encoded], max_batch_tokens, max_batch_size):
            out = self.forward([encoded[i] for i in batch])
            for b, i in enumerate(batch):
                probabilities[i] = {task: out[task][b] for task in out}
        return self.results(probabilities)


def quantize_linear_layers(model: Any) -> Any:
    """int8 dynamic quantization of ``model``'s ``nn.Linear`` layers (CPU inference)."""
    import torch

    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _autocast(device: str):
    """Half precision on CUDA (bf16 where supported, else fp16); a no-op context on CPU (``ml.precision``)."""
    from ml.precision import inference_autocast

    return inference_autocast(device)


def _text_list(values: Any, what: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of texts, not a single string")
    return ["" if t is None else str(t) for t in values]


def _multi_label_result(labels: list[str], probs: list[float], thresholds: list[float]) -> dict[str, Any]:
    """Every label whose probability reaches its threshold (most likely first), plus all scores and the top one."""
    order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
    return {
        "labels": [labels[c] for c in order if probs[c] >= thresholds[c]],
        "scores": {label: float(p) for label, p in zip(labels, probs)},
        "label": labels[order[0]],
        "score": float(probs[order[0]]),
    }


def _label_result(labels: list[str], probs: list[float]) -> dict[str, Any]:
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"label": labels[best], "score": float(probs[best]), "scores": {l: float(p) for l, p in zip(labels, probs)}}
