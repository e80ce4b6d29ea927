"""The question-answering backend (``ml.backend``): (question, context) pairs in, answers (spans of the context) out.

``encode`` turns each pair into its windows (``ml.qa_features``: a context longer than the model's ``max_length`` is
several rows overlapping by the model's ``doc_stride``; a question too long for them is a ``QAInputError``, a
ValueError, before anything is queued), the batching engine runs the rows of every request together (they share
batches with other jobs' rows), and ``results`` regroups each question's windows before reading its answers off
all of them (``ml.qa_postprocess.best_answers``: ``top_k``, ``max_answer_length``, no answer when the model was
trained with unanswerable questions and that scores best).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.task_types.question_answering import DEFAULT_DOC_STRIDE, NAME
from .backend import Encoded
from .batching import Served
from .qa_features import QAInputError, Window, make_windows
from .qa_postprocess import DEFAULT_MAX_ANSWER_LENGTH, DEFAULT_TOP_K, best_answers
from .text_classification import PairRow, _autocast

MAX_TOP_K = 20


@dataclass
class _Inputs:
    """What ``results`` needs to read one request's outputs back: the questions, contexts and windows."""

    questions: list[str]
    contexts: list[str]
    windows: list[Window]


class QAPredictor(Served):
    """A loaded QA model as a backend of the batching engine.

    ``model``: a ``models.question_answering`` model (logits (B, T, 2)); ``max_length`` / ``doc_stride``: the windows
    it was trained with; ``no_answer``: whether it may answer nothing.
    """

    def __init__(self, model: Any, tokenizer: Any, *, device: str = "cpu", max_length: int = 384,
                 doc_stride: int | None = DEFAULT_DOC_STRIDE, no_answer: bool = False):
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device
        self.max_length = int(max_length)
        self.doc_stride = int(doc_stride if doc_stride is not None else DEFAULT_DOC_STRIDE)
        self.no_answer = bool(no_answer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.takes_token_types = bool(getattr(model, "takes_token_types", False))
        self._lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self._engine = None

    @classmethod
    def load(cls, model_dir: Any, device: str = "cpu") -> "QAPredictor":
        """The saved QA model in ``model_dir`` with the windows it was trained with; ValueError for a model of
        another task type."""
        from models.io import load_model, model_task_type, read_model_config

        config = read_model_config(model_dir)
        if model_task_type(config) != NAME:
            raise ValueError(f"{model_dir} holds a {model_task_type(config)} model, not a question-answering one")
        model, tokenizer = load_model(model_dir, device)
        return cls(model, tokenizer, device=device, max_length=model.max_length or 384, doc_stride=model.stride,
                   no_answer=model.no_answer)

    def encode(self, inputs: Sequence[str], pairs: Sequence[str] | None = None) -> Encoded:
        """Windows of every (question, context): ``inputs`` the questions, ``pairs`` their contexts."""
        questions = list(inputs)
        if pairs is None or len(pairs) != len(questions):
            raise QAInputError("question answering takes (question, context) pairs")
        contexts = list(pairs)
        if not all(isinstance(q, str) and q.strip() for q in questions) or \
                not all(isinstance(c, str) and c.strip() for c in contexts):
            raise QAInputError("every question and context must be a non-empty text")
        if not questions:
            return Encoded([], [], _Inputs([], [], []))
        windows = make_windows(self.tokenizer, questions, contexts, self.max_length, self.doc_stride)
        counts = [0] * len(questions)
        for window in windows:
            counts[window.source] += 1
        rows = [PairRow(w.input_ids, w.token_type_ids) for w in windows]
        return Encoded(rows, counts, _Inputs(questions, contexts, windows))

    def forward(self, rows: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row its start and end logits (fp32, padding cut off), for one padded batch."""
        import torch

        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (B, T)
        types = torch.zeros((len(rows), longest), dtype=torch.long) if self.takes_token_types else None  # (B, T)
        for b, row in enumerate(rows):
            ids[b, :len(row)] = torch.tensor(list(row), dtype=torch.long)
            mask[b, :len(row)] = 1
            if types is not None and getattr(row, "token_type_ids", None) is not None:
                types[b, :len(row)] = torch.tensor(row.token_type_ids, dtype=torch.long)
        extra = {"token_type_ids": types.to(self.device)} if types is not None else {}
        with self.forward_guard(), torch.inference_mode(), _autocast(self.device):
            logits = self.model(ids.to(self.device), mask.to(self.device), **extra).logits  # (B, T, 2)
        values = logits.float().cpu().numpy()  # (B, T, 2)
        return [(values[b, :len(row), 0], values[b, :len(row), 1]) for b, row in enumerate(rows)]

    def results(self, outputs: list[list[tuple[np.ndarray, np.ndarray]]], encoded: Encoded | None = None, *,
                top_k: int | None = None, max_answer_length: int | None = None) -> list[dict]:
        """Per question ``{"question", "answer", "score", "start", "end"}`` (its best answer) plus ``answers`` (the
        ``top_k`` best, best first) when ``top_k`` > 1."""
        top_k = DEFAULT_TOP_K if top_k is None else int(top_k)
        max_answer_length = DEFAULT_MAX_ANSWER_LENGTH if max_answer_length is None else int(max_answer_length)
        if not 1 <= top_k <= MAX_TOP_K or max_answer_length < 1:
            raise ValueError(f"top_k must be 1 to {MAX_TOP_K} and max_answer_length at least 1")
        context: _Inputs = encoded.context
        out, position = [], 0
        for question, text, per_input in zip(context.questions, context.contexts, outputs):
            windows = context.windows[position:position + len(per_input)]
            position += len(per_input)
            answers = best_answers(text, [(start, end, w.offsets) for (start, end), w in zip(per_input, windows)],
                                   max_answer_length=max_answer_length, top_k=top_k, allow_no_answer=self.no_answer)
            result = {"question": question, **_rounded(answers[0])}
            if top_k > 1:
                result["answers"] = [_rounded(a) for a in answers]
            out.append(result)
        return out


def _rounded(answer: dict) -> dict:
    return {**answer, "score": round(float(answer["score"]), 6)}
