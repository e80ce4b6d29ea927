"""Extractive question answering (SQuAD style): a question and a context in, a span of the context out.

Training data (every shape becomes :class:`Example` through :func:`read_examples`):

- rows with a context, a question and ``answers`` (``context_column``, ``question_column``, ``answers_column``;
  defaults ``context``, ``question``, ``answers``): the answers cell holds ``{"text": [...], "answer_start": [...]}``
  (character offsets; several gold answers allowed) or a list of ``{"text", "answer_start"}`` objects -- a JSON Lines
  upload keeps the object as JSON text, a CSV one as a JSON cell;
- CSV rows with ``answer_text`` + ``answer_start`` columns instead of an answers column (one gold answer; both empty:
  unanswerable);
- the nested SQuAD file, ``{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers",
  "is_impossible"?}]}]}]}``: uploaded as one JSON object it is one row whose ``data`` cell holds the articles, which
  :func:`read_examples` flattens (one example per question).

Every answer is checked against its context (``answer_text == context[start:start + len(answer_text)]``); an empty
answer list means unanswerable (SQuAD v2): a model trained with such questions may answer "no answer". A question
surely too long for the windows (:func:`question_too_long`: a torch-free lower bound on its tokens) is refused before
any job is queued, for training, classification and evaluation alike.

Metrics (:func:`squad_metrics`, torch-free, 0-1 scale): ``exact_match`` and ``f1`` in the SQuAD sense (lowercase,
strip punctuation and articles, collapse whitespace; best over the gold answers; an unanswerable question scores 1
only for the empty answer), plus ``has_answer_f1`` / ``has_answer_exact`` and ``no_answer_accuracy`` when both kinds
are present.

Predictions (``ml.qa_serving``): ``{"question", "answer", "score", "start", "end"}`` (character offsets into the
context, ``answer == context[start:end]``; no answer: ``""`` at 0, 0), plus ``answers`` (the ``top_k`` best, each
``{"answer", "score", "start", "end"}``) when more than one was asked for. A stored prediction keeps the question
in ``text`` and the context in ``text_pair``; ``label`` is ``answered`` or ``no_answer`` (what ``?label=`` filters
on), ``score`` the best answer's.
"""
from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import HFHead, RequestError, TaskType, register

NAME = "question-answering"
DEFAULT_CONTEXT_COLUMN, DEFAULT_QUESTION_COLUMN, DEFAULT_ANSWERS_COLUMN = "context", "question", "answers"
ANSWER_TEXT_COLUMN, ANSWER_START_COLUMN = "answer_text", "answer_start"  # the CSV shape of one gold answer
SQUAD_DATA_COLUMN = "data"  # a nested SQuAD file uploaded as one JSON object: its articles
DEFAULT_MAX_LENGTH = 384  # question + context window, as the SQuAD recipes
DEFAULT_DOC_STRIDE = 128
SPECIAL_TOKENS = 3  # [CLS] question [SEP] context [SEP]
ANSWERED, NO_ANSWER = "answered", "no_answer"  # the ``label`` of a stored prediction
METRIC_KEYS = ("exact_match", "f1", "has_answer_f1", "no_answer_accuracy")


def default_doc_stride(max_length: int) -> int:
    """The windows' overlap when none is given (a training request's, an imported model's): 128 tokens, or a third
    of a shorter ``max_length`` (as 128 is of 384), so that ``max_length`` alone (128, say) is a valid request."""
    return min(DEFAULT_DOC_STRIDE, max(1, int(max_length) // 3))


def _error(message: str, code: str = "invalid_answers"):
    from core.datasets import DatasetError  # core.datasets imports this package

    return DatasetError(message, code=code, status=422)


@dataclass(frozen=True)
class Columns:
    """Where a dataset's questions, contexts and answers are (a training config's or an evaluation plan's)."""

    context: str = DEFAULT_CONTEXT_COLUMN
    question: str = DEFAULT_QUESTION_COLUMN
    answers: str = DEFAULT_ANSWERS_COLUMN

    @classmethod
    def of(cls, config: Any) -> "Columns":
        return cls(getattr(config, "context_column", None) or DEFAULT_CONTEXT_COLUMN,
                   getattr(config, "question_column", None) or DEFAULT_QUESTION_COLUMN,
                   getattr(config, "answers_column", None) or DEFAULT_ANSWERS_COLUMN)

    def in_dataset(self, columns: Sequence[str]) -> tuple[list[str], list[str]]:
        """(text columns, answer columns) a dataset with ``columns`` is read from: the nested SQuAD ``data``
        column, the answers column, or ``answer_text`` + ``answer_start``."""
        if self.context not in columns and SQUAD_DATA_COLUMN in columns:
            return [], [SQUAD_DATA_COLUMN]
        if self.answers not in columns and ANSWER_TEXT_COLUMN in columns and ANSWER_START_COLUMN in columns:
            return [self.question, self.context], [ANSWER_TEXT_COLUMN, ANSWER_START_COLUMN]
        return [self.question, self.context], [self.answers]


@dataclass(frozen=True)
class Example:
    """One question about one context, with its gold answers ``(text, start)`` (empty: unanswerable)."""

    question: str
    context: str
    answers: tuple[tuple[str, int], ...] = ()
    id: str | None = None
    row: int | None = field(default=None, compare=False)  # its dataset row (1-based; a SQuAD file: 1): messages

    @property
    def where(self) -> str:
        """Where it is in its dataset, for a message: ``row 300``, or ``row 1, question id 'q57'`` (a SQuAD file)."""
        return f"row {self.row}" + (f", question id {self.id!r}" if self.id is not None else "")

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def question_budget(max_length: int, doc_stride: int) -> int:
    """The most tokens a question may have: the window must still hold more than ``doc_stride`` context tokens."""
    return max_length - SPECIAL_TOKENS - doc_stride - 1


_PUNCTUATION = frozenset(string.punctuation)  # ASCII: what a BERT tokenizer always splits off, what SQuAD drops


# BERT's whitespace (the tokenizer drops \v, \f... as controls) and the ASCII punctuation it always splits off
_WHITESPACE = "\t\n\r \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # \t \n \r and Unicode's Zs
_ASCII_PUNCTUATION = r"!-/:-@\[-`{-~"
# a punctuation character, or a run between whitespace and punctuation that holds a letter or digit ([^\W_]: what
# str.isalnum() accepts): each is at least one token
_MIN_TOKEN = re.compile(f"[{_ASCII_PUNCTUATION}]|[^{_WHITESPACE}{_ASCII_PUNCTUATION}\\w]*[^\\W_]"
                        f"[^{_WHITESPACE}{_ASCII_PUNCTUATION}]*")


def min_tokens(text: str) -> int:
    """A lower bound on the tokens a BERT-family tokenizer makes of ``text``, torch-free (the web and the data checks
    have no tokenizer): every ASCII punctuation character is a token of its own, and every run of letters or digits
    between whitespace and such punctuation is at least one (a word piece or ``[UNK]``). Characters the tokenizer
    may drop or glue to a word (accents, controls, symbols) count for nothing, so this never says more than the
    tokenizer's count (``ml.qa_features.check_lengths`` counts exactly, later). One regular expression, so a context
    of a million characters is counted in milliseconds."""
    return len(_MIN_TOKEN.findall(text))


def min_windows(question_tokens: int, context_tokens: int, max_length: int, doc_stride: int) -> int:
    """A lower bound on the windows a question and its context become (``ml.qa_features.make_windows``), from lower
    bounds on their tokens (:func:`min_tokens`): a window holds at most ``max_length - 3 - question_tokens``
    context tokens and the next starts ``doc_stride`` tokens before its end, so ``1 + ceil((context - room) / (room -
    doc_stride))`` windows, at least; 1 when the question leaves no room (it is refused by its own check)."""
    room = max_length - SPECIAL_TOKENS - question_tokens
    if context_tokens <= room or room <= doc_stride:
        return 1
    return 1 + -(-(context_tokens - room) // (room - doc_stride))


def min_training_windows(examples: Iterable[Example], max_length: int, doc_stride: int) -> int:
    """A lower bound on the windows training on ``examples`` encodes per epoch (the sum of :func:`min_windows`),
    torch-free and tokenizer-free: what the training-work limit counts. A context shared by consecutive questions
    (a SQuAD paragraph, or rows repeating it) is counted once."""
    total, last_context, context_tokens = 0, None, 0
    for example in examples:
        if example.context is not last_context and example.context != last_context:
            last_context, context_tokens = example.context, min_tokens(example.context)
        total += min_windows(min_tokens(example.question), context_tokens, max_length, doc_stride)
    return total


def question_too_long(question: str, max_length: int, doc_stride: int) -> str | None:
    """Why ``question`` cannot fit windows of ``max_length`` overlapping by ``doc_stride`` (as "has at least N tokens:
    ..."), or None when it may (:func:`min_tokens` is a lower bound: only a surely too long one is named)."""
    budget, length = question_budget(max_length, doc_stride), min_tokens(question)
    if length <= budget:
        return None
    return (f"has at least {length} tokens: with max_length {max_length} and doc_stride {doc_stride} a question may "
            f"have at most {budget} (shorten it, or lower doc_stride)")


def first_too_long(questions: Iterable[Any], windows: tuple[int, int]) -> tuple[int, str] | None:
    """``(number, why)`` of the first of ``questions`` (numbered from 1; a non-text or blank cell is skipped: the
    row checks name it) surely too long for ``windows`` = (max_length, doc_stride), or None."""
    for number, question in enumerate(questions, start=1):
        too_long = isinstance(question, str) and question.strip() and question_too_long(question, *windows)
        if too_long:
            return number, too_long
    return None


def serving_windows(model_params: Mapping[str, Any]) -> tuple[int, int] | None:
    """(max_length, doc_stride) a QA model's inputs are cut to, from its params: a trained model's request, or an
    imported model's ``max_length`` with the overlap its import gave it (:meth:`QuestionAnswering.hf_import_fields`);
    None when the params do not say."""
    max_length = model_params.get("max_length")
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        return None
    doc_stride = model_params.get("doc_stride")
    if not isinstance(doc_stride, int) or isinstance(doc_stride, bool):
        doc_stride = default_doc_stride(max_length)
    return max_length, doc_stride


def _text(value: Any, what: str, number: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _error(f"row {number}: the {what} must be a non-empty string", "invalid_question")
    if "\x00" in value:
        raise _error(f"row {number}: the {what} holds a NUL character", "invalid_question")
    return value


_INTEGER = re.compile(r"\s*-?[0-9]+\s*")  # an offset in a CSV cell: ASCII digits only ("²" is no offset)


def _shown(value: Any) -> str:
    """A cell's value for a message, cut short (a value may be a whole uploaded document)."""
    shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


def check_answers(texts: Sequence[Any], starts: Sequence[Any], context: str,
                  number: int) -> tuple[tuple[str, int], ...]:
    """Gold answers as ``((text, start), ...)``, each checked against the context: an integer offset inside it and
    the answer text found exactly there."""
    if len(texts) != len(starts):
        raise _error(f"row {number}: {len(texts)} answer texts but {len(starts)} answer_start offsets")
    out = []
    for text, start in zip(texts, starts):
        if isinstance(start, str) and _INTEGER.fullmatch(start):  # a CSV cell
            try:
                start = int(start)
            except ValueError:  # more digits than Python converts (4,300): past any context
                raise _error(f"row {number}: answer_start {start.strip()[:20]}... ({len(start.strip())} digits) is "
                             f"outside the context of {len(context)} characters", "answer_out_of_range") from None
        if isinstance(start, bool) or not isinstance(start, int):
            raise _error(f"row {number}: answer_start must be an integer, got {_shown(start)}")
        if not isinstance(text, str) or not text:
            raise _error(f"row {number}: an answer text must be a non-empty string, got {_shown(text)}")
        if not 0 <= start <= len(context) - len(text):
            raise _error(f"row {number}: answer {text[:60]!r} at {start} is outside the context of {len(context)} "
                         "characters", "answer_out_of_range")
        if context[start:start + len(text)] != text:
            raise _error(f"row {number}: the context does not hold the answer {text[:60]!r} at {start} (it holds "
                         f"{context[start:start + len(text)][:60]!r})", "answer_mismatch")
        out.append((text, start))
    return tuple(out)


def parse_answers(value: Any, context: str, number: int) -> tuple[tuple[str, int], ...]:
    """An answers cell -- ``{"text": [...], "answer_start": [...]}``, a list of ``{"text", "answer_start"}``, or the
    JSON text of either; empty (``""``, ``[]``, empty lists) means unanswerable -- checked against ``context``."""
    if isinstance(value, str):
        if not value.strip():
            return ()
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise _error(f"row {number}: the answers cell must be JSON ({{\"text\": [...], \"answer_start\": [...]}}), "
                         f"got {value[:60]!r}") from None
    if isinstance(value, Mapping) and "text" in value and "answer_start" in value:
        texts, starts = value["text"], value["answer_start"]
        if not isinstance(texts, list):
            texts, starts = [texts], [starts]
        if not isinstance(starts, list):
            raise _error(f"row {number}: answer_start must be a list like text")
        return check_answers(texts, starts, context, number)
    if isinstance(value, list) and all(isinstance(a, Mapping) and "text" in a and "answer_start" in a for a in value):
        return check_answers([a["text"] for a in value], [a["answer_start"] for a in value], context, number)
    raise _error(f"row {number}: answers must be {{\"text\": [...], \"answer_start\": [...]}} or a list of "
                 "{\"text\", \"answer_start\"} objects")


def _squad_examples(cell: Any, number: int, budget: tuple[int, int] | None) -> Iterator[Example]:
    """The questions of a nested SQuAD ``data`` cell (a list of articles with ``paragraphs``)."""
    articles = cell
    if isinstance(cell, str) and cell.strip():
        try:
            articles = json.loads(cell)
        except (ValueError, RecursionError):  # a CSV cell, or a JSON Lines string, that is no JSON: no articles
            articles = None
    if not isinstance(articles, list):
        raise _error(f"row {number}: a SQuAD file's data must be a list of articles", "invalid_squad")
    for article in articles:
        paragraphs = article.get("paragraphs") if isinstance(article, Mapping) else None
        if not isinstance(paragraphs, list):
            raise _error(f"row {number}: every SQuAD article needs a list of paragraphs", "invalid_squad")
        for paragraph in paragraphs:
            if not isinstance(paragraph, Mapping) or not isinstance(paragraph.get("qas"), list):
                raise _error(f"row {number}: every SQuAD paragraph needs a context and a list of qas", "invalid_squad")
            context = _text(paragraph.get("context"), "context", number)
            for qa in paragraph["qas"]:
                if not isinstance(qa, Mapping):
                    raise _error(f"row {number}: a SQuAD qa must be an object", "invalid_squad")
                question = _question(qa.get("question"), number, budget)
                answers = () if qa.get("is_impossible") else parse_answers(qa.get("answers") or [], context, number)
                qid = qa.get("id")
                yield Example(question, context, answers, None if qid is None else str(qid), number)


def _question(value: Any, number: int, budget: tuple[int, int] | None) -> str:
    """A question checked as a text and, given ``budget`` (max_length, doc_stride), for fitting its windows."""
    question = _text(value, "question", number)
    too_long = budget is not None and question_too_long(question, *budget)
    if too_long:
        raise _error(f"row {number}: the question {too_long}", "question_too_long")
    return question


def read_examples(rows: Iterable[Mapping[str, Any]], columns: Columns,
                  budget: tuple[int, int] | None = None) -> Iterator[Example]:
    """Every example of a dataset's rows (see the module docstring), checked; :class:`core.datasets.DatasetError`
    (422) for a missing or malformed cell, an answer that is not where its offset says, or (given ``budget``,
    ``(max_length, doc_stride)``) a question surely too long for its windows."""
    for number, row in enumerate(rows, start=1):
        if columns.context not in row and SQUAD_DATA_COLUMN in row:
            yield from _squad_examples(row[SQUAD_DATA_COLUMN], number, budget)
            continue
        context = _text(row.get(columns.context), "context", number)
        question = _question(row.get(columns.question), number, budget)
        if columns.answers not in row and ANSWER_TEXT_COLUMN in row and ANSWER_START_COLUMN in row:
            text, start = row[ANSWER_TEXT_COLUMN], row[ANSWER_START_COLUMN]
            blank = (text is None or text == "") and (start is None or str(start).strip() == "")
            answers = () if blank else check_answers([text], [start], context, number)
        else:
            answers = parse_answers(row.get(columns.answers, ""), context, number)
        yield Example(question, context, answers, None if row.get("id") in (None, "") else str(row.get("id")),
                      number)


# ---------------------------------------------------------------------------------------------------- metrics

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, drop the articles a / an / the, collapse whitespace."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _golds(gold: Sequence[str]) -> list[str]:
    """The gold answers that normalise to something, or the empty answer when none does (the official SQuAD v2
    script's rule: a gold answer of only punctuation or articles counts as no answer)."""
    return [g for g in gold if normalize_answer(g)] or [""]


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer (no gold answer: the empty answer)."""
    return float(normalize_answer(prediction) in {normalize_answer(g) for g in _golds(gold)})


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # SQuAD v2: an empty side scores 1 only against another empty side
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, gold: Sequence[str]) -> float:
    """Token-overlap F1 of the normalised texts, the best over the gold answers (no gold answer: the empty one)."""
    return max(_f1(prediction, g) for g in _golds(gold))


def squad_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``exact_match``, ``f1`` (means over the questions), ``has_answer_exact`` / ``has_answer_f1`` (over the
    answerable ones), ``no_answer_accuracy`` (the share of unanswerable ones answered with nothing), and the counts
    ``questions`` / ``has_answer`` / ``no_answer``; a breakdown without questions of its kind is None."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} questions")
    em = [exact_match(p, g) for p, g in zip(predictions, golds)]
    f1 = [f1_score(p, g) for p, g in zip(predictions, golds)]
    has = [i for i, g in enumerate(golds) if g]
    none = [i for i, g in enumerate(golds) if not g]

    def mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "exact_match": mean(em), "f1": mean(f1),
        "has_answer_exact": mean([em[i] for i in has]), "has_answer_f1": mean([f1[i] for i in has]),
        "no_answer_accuracy": mean([em[i] for i in none]),
        "questions": len(golds), "has_answer": len(has), "no_answer": len(none),
    }


# ---------------------------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class QAExport:
    """Export columns: ``index``, ``id``?, ``question``, ``context``, ``answer``, ``score``, ``start``, ``end`` (the
    best answer; JSONL also ``answers`` when the job asked for several). CSV: one line per answer when the job asked
    for several, with its ``rank`` (1: the best), else one line per question."""

    with_id: bool = False
    top_k: bool = False
    columns: list[str] = field(init=False)
    csv_columns: list[str] = field(init=False)

    def __post_init__(self) -> None:
        head = ["index", *(["id"] if self.with_id else []), "question", "context"]
        answer = ["answer", "score", "start", "end"]
        object.__setattr__(self, "columns", [*head, *answer, *(["answers"] if self.top_k else [])])
        object.__setattr__(self, "csv_columns", [*head, *(["rank"] if self.top_k else []), *answer])

    def csv_rows(self, p: Any) -> list[dict]:
        row = self.row(p)
        answers = row.pop("answers", None)
        if not self.top_k:
            return [row]
        lines = []
        for rank, answer in enumerate(answers or [], start=1):
            line = {**row, **{k: answer.get(k) for k in ("answer", "score", "start", "end")}, "rank": rank}
            lines.append({k: line[k] for k in self.csv_columns})  # in the header's order
        return lines

    def row(self, p: Any) -> dict:
        result = p.result or {}
        row: dict = {"index": p.index}
        if self.with_id:
            row["id"] = p.row_id
        row.update(question=p.text, context=p.text_pair, answer=result.get("answer"), score=result.get("score"),
                   start=result.get("start"), end=result.get("end"))
        if self.top_k:
            row["answers"] = result.get("answers", [])
        return row


@dataclass(frozen=True)
class QAEvaluationPlan:
    """What a QA model's evaluate job reads from each row (stored in the job's params)."""

    context_column: str
    question_column: str
    answers_column: str
    task_type: str = NAME
    # the model's (max_length, doc_stride), to refuse a question surely too long before the job is queued; not
    # stored (the worker counts every question's tokens exactly)
    windows: tuple[int, int] | None = None

    def to_params(self) -> dict:
        return {"context_column": self.context_column, "question_column": self.question_column,
                "answers_column": self.answers_column, "task_type": self.task_type}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "QAEvaluationPlan":
        return cls(params["context_column"], params["question_column"], params["answers_column"])

    @property
    def source(self) -> Columns:
        return Columns(self.context_column, self.question_column, self.answers_column)

    def columns_in(self, columns: Sequence[str]) -> list[str]:
        """The dataset columns evaluation reads (422 ``unknown_column`` when one is missing)."""
        from core.evaluation import EvaluationError

        texts, answers = self.source.in_dataset(columns)
        missing = [c for c in [*texts, *answers] if c not in columns]
        if missing:
            raise EvaluationError("unknown_column", f"column(s) {', '.join(map(repr, missing))} not in the dataset; "
                                  f"a question-answering evaluation reads {', '.join(texts + answers)}")
        return [*texts, *answers]

    @property
    def columns(self) -> list[str]:
        """The columns of a dataset with an answers column (:meth:`columns_in` knows the other shapes)."""
        return [self.question_column, self.context_column, self.answers_column]

    def examples(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[Example]:
        return read_examples(rows, self.source)

    def check_labels(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Every row read as a training row is (422 for a bad answer or offset, or a question surely too long for
        the model's windows); at least one question."""
        from core.evaluation import EvaluationError

        if not sum(1 for _ in read_examples(rows, self.source, self.windows)):  # reads every row: a bad one raises
            raise EvaluationError("nothing_to_evaluate", "the dataset holds no question to evaluate on")


@register
class QuestionAnswering(TaskType):
    """Extractive question answering (``BertForQuestionAnswering``)."""

    name = NAME
    pipeline_tag = "question-answering"
    label = "Question answering (extractive)"
    default_metric = "f1"
    metrics = ("f1", "exact_match", "has_answer_f1", "no_answer_accuracy", "val_loss")
    # label_column(s): only as the answers column itself (a validated request stores them resolved so)
    request_fields = frozenset({"context_column", "question_column", "answers_column", "label_column",
                                "label_columns"})
    training_defaults = {"max_length": DEFAULT_MAX_LENGTH}  # question + context windows, as the SQuAD recipes
    families = ("bert", "distilbert")
    # an imported checkpoint answers as the transformers pipeline does by default: never "no answer"
    hf = HFHead(
        architectures={"bert": "BertForQuestionAnswering", "distilbert": "DistilBertForQuestionAnswering"},
        layers={"bert": {"qa_outputs": 2}, "distilbert": {"qa_outputs": 2}},
        dropout_field={"distilbert": "qa_dropout"},
        task="answer",
        labels=("start", "end"),  # what the head's two outputs are (models.question_answering.LABELS): id2label,
        # a leftover of whatever the checkpoint was made from, means nothing for a QA head
        head_options={"bert": {"no_answer": False}, "distilbert": {"no_answer": False}},
    )

    def hf_import_fields(self, labels: Sequence[str], max_length: int) -> dict[str, Any]:
        """The windows' overlap a training request gets by default, or a third of a shorter ``max_length`` (as 128 is
        of 384); a token model's ``scheme``: none."""
        return {"stride": default_doc_stride(max_length), "scheme": None}

    def check_classify_request(self, request: Any, model_id: Any, model_params: Mapping[str, Any]) -> None:
        """``questions`` or a dataset (its question and context columns are the pair), nothing else; a question
        surely too long for the model's windows is refused before a job is queued (a dataset's: by
        :meth:`check_classify_dataset`)."""
        if not (request.with_questions or request.from_dataset) or request.with_tokens or \
                getattr(request, "aggregation_strategy", None) is not None:
            raise RequestError("questions_required", f"model {model_id} is a question-answering model: send "
                               "questions ([{\"question\", \"context\"}]) or a dataset with question and context "
                               "columns")
        windows = serving_windows(model_params)
        if windows is None or not request.with_questions:
            return
        found = first_too_long((item.question for item in request.questions), windows)
        if found:
            raise RequestError("question_too_long", f"question {found[0]} {found[1]}")

    def classify_columns(self, request: Any, model_id: Any, model_params: Mapping[str, Any]) -> dict[str, Any]:
        """A dataset job reads its question column as the text and its context column as the pair: the request's
        ``text_column`` / ``text_pair_column``, else the model's question and context columns (an imported model
        records none: the defaults)."""
        return {"text_column": request.text_column or model_params.get("question_column") or DEFAULT_QUESTION_COLUMN,
                "text_pair_column": (request.text_pair_column or model_params.get("context_column")
                                     or DEFAULT_CONTEXT_COLUMN)}

    def check_classify_dataset(self, columns: Sequence[str], request: Any, model_params: Mapping[str, Any],
                               rows: Iterable[Mapping[str, str]] | None = None) -> bool:
        """Every question of the dataset (``rows``, streamed) checked against the model's windows before the job is
        queued: one surely too long (:func:`question_too_long`) is a 422 ``question_too_long`` naming its row, not a
        failed job. Returns False: the question and context columns are then defaulted and checked as text columns
        are (:meth:`classify_columns`; a missing one is named there, so it is not read here)."""
        windows = serving_windows(model_params)
        read = self.classify_columns(request, getattr(request, "model_id", None), model_params)
        question_column = read["text_column"]
        if windows is None or rows is None or any(c not in columns for c in read.values()):
            return False
        found = first_too_long((row.get(question_column) for row in rows), windows)
        if found:
            raise _error(f"row {found[0]}: the question {found[1]}", "question_too_long")
        return False

    def misdirected(self, request: Any, model_id: Any, model_task_type: str) -> RequestError | None:
        """``questions``, ``top_k`` and ``max_answer_length`` are for question-answering models only."""
        if request.with_questions:
            return RequestError("questions_not_supported", f"model {model_id} is a {model_task_type} model: "
                                "questions ({question, context}) are for question-answering models")
        options = [n for n in ("top_k", "max_answer_length") if getattr(request, n, None) is not None]
        if options:
            return RequestError("option_not_supported", f"model {model_id} is a {model_task_type} model: "
                                f"{' and '.join(options)} apply to question-answering models")
        return None

    def evaluation_plan_from_params(self, params: Mapping[str, Any]) -> "QAEvaluationPlan":
        """A :class:`QAEvaluationPlan`."""
        return QAEvaluationPlan.from_params(params)

    def resolve_columns(self, config: Any) -> bool:
        """Defaults for the columns and ``doc_stride`` (:func:`default_doc_stride` of ``max_length``, itself 384 by
        :attr:`training_defaults` unless given), ``doc_stride`` checked against it (the question's own length is
        checked per question when the data is read: ``ml.qa_features``)."""
        config.context_column = config.context_column or DEFAULT_CONTEXT_COLUMN
        config.question_column = config.question_column or DEFAULT_QUESTION_COLUMN
        config.answers_column = config.answers_column or DEFAULT_ANSWERS_COLUMN
        names = [config.context_column, config.question_column, config.answers_column]
        if len(set(names)) != 3:
            raise ValueError("context_column, question_column and answers_column must differ")
        if "doc_stride" not in config.model_fields_set:  # a shorter max_length alone must not be refused
            config.doc_stride = default_doc_stride(config.max_length)
        if config.doc_stride >= config.max_length - SPECIAL_TOKENS - 1:
            raise ValueError(f"doc_stride ({config.doc_stride}) must be less than max_length - {SPECIAL_TOKENS + 1} "
                             f"({config.max_length - SPECIAL_TOKENS - 1}): windows must move on")
        given = config.label_columns or ([config.label_column] if config.label_column else [])
        if given and given != [config.answers_column]:
            raise ValueError("question answering reads its answers from answers_column: label_column(s) do not apply")
        config.label_columns, config.label_column = [config.answers_column], config.answers_column
        return True

    def text_columns(self, config: Any) -> list[str]:
        """The question and context columns (a nested SQuAD file's ``data`` column: :meth:`dataset_columns`)."""
        return [config.question_column, config.context_column]

    def dataset_columns(self, config: Any, columns: Sequence[str]) -> tuple[list[str], list[str]]:
        return Columns.of(config).in_dataset(columns)

    def training_sequences(self, config: Any, columns: Sequence[str], row_count: int,
                           rows: Iterable[Mapping[str, Any]]) -> int:
        """The windows of every question, at least (:func:`min_training_windows`: characters counted into tokens
        by a lower bound, no tokenizer), read from the rows: a row is one question, or a whole SQuAD file; a
        context of a million characters is hundreds of windows. A malformed row is the same 422 the row checks
        give."""
        return min_training_windows(read_examples(rows, Columns.of(config)), config.max_length, config.doc_stride)

    def check_training_rows(self, rows: Iterable[Mapping[str, str]], config: Any, *,
                            known: Mapping[str, set[str]] | None = None) -> dict[str, Counter]:
        """Every example checked (:func:`read_examples`, questions against the windows too); counts ``answer`` /
        ``no_answer`` questions; training data needs at least one answerable question."""
        counts: Counter = Counter()
        for example in read_examples(rows, Columns.of(config), (config.max_length, config.doc_stride)):
            counts["answer" if example.answerable else "no_answer"] += 1
        if known is None and not counts["answer"]:
            raise _error("the dataset has no answerable question: there is nothing to learn", "too_few_classes")
        return {config.answers_column or DEFAULT_ANSWERS_COLUMN: counts}

    def prediction_columns(self, result: Mapping[str, Any]) -> dict[str, Any]:
        stored = {k: result[k] for k in ("question", "answer", "score", "start", "end") if k in result}
        if "answers" in result:
            stored["answers"] = list(result["answers"])
        label = ANSWERED if result.get("answer") else NO_ANSWER
        return {"result": stored, "label": label, "score": float(result.get("score") or 0.0), "scores": {},
                "tasks": None, "labels": None}

    def prediction_fields(self, prediction: Any) -> dict[str, Any]:
        """``question``, ``answer``, ``score``, ``start``, ``end`` (and ``answers`` for top_k > 1)."""
        result = dict(prediction.result or {})
        result.setdefault("question", prediction.text)
        return result

    def export_layout(self, *, model_tasks: Mapping[str, Sequence[str]] | None, model_params: Mapping[str, Any],
                      first: Any | None, with_id: bool, with_pair: bool) -> QAExport:
        return QAExport(with_id=with_id, top_k=first is not None and "answers" in (first.result or {}))

    def dataset_mismatch(self, columns: Sequence[str], list_columns: Collection[str],
                         used: Sequence[str] = (), model_params: Mapping[str, Any] | None = None) -> str | None:
        """A QA dataset has the question and context columns holding texts (not token lists) and its answers (or a
        nested SQuAD ``data`` column): a plan's (``used``, the request's names) or else the model's; missing columns
        of a plan are named by the caller."""
        params = model_params or {}
        if len(used) == 3:  # a plan's columns (QAEvaluationPlan.columns: question, context, answers): the request's
            source = Columns(context=used[1], question=used[0], answers=used[2])
        else:
            source = Columns(params.get("context_column") or DEFAULT_CONTEXT_COLUMN,
                             params.get("question_column") or DEFAULT_QUESTION_COLUMN,
                             params.get("answers_column") or DEFAULT_ANSWERS_COLUMN)
        texts, answers = source.in_dataset(columns)
        listed = [c for c in texts if c in list_columns]
        if listed:
            return (f"column {listed[0]!r} holds token lists (JSON arrays of strings); a question-answering model "
                    "reads questions and contexts as texts")
        wanted = [*texts, *answers]
        present = [c for c in wanted if c in columns]
        if not present or (not used and len(present) < len(wanted)):  # a plan's missing columns: named later
            return (f"it has no {', '.join(map(repr, wanted))} columns (questions, contexts and answers, or a "
                    "nested SQuAD file's data)")
        return None

    def label_condition(self, session: Any, label: str, model_params: Mapping[str, Any]) -> Any:
        """``?label=answered`` or ``?label=no_answer``: the ``label`` column."""
        from core.schema import Prediction

        return Prediction.label == label

    def plan_evaluation(self, model_family: str, model_tasks: Mapping[str, list[str]],
                        model_params: Mapping[str, Any] | None, *, text_column: str | None = None,
                        text_pair_column: str | None = None, label_column: str | None = None,
                        label_columns: list[str] | None = None, context_column: str | None = None,
                        question_column: str | None = None, answers_column: str | None = None,
                        dataset_columns: Sequence[str] | None = None) -> QAEvaluationPlan:
        """The model's columns unless the request names others (``label_column``: the answers column);
        ``dataset_columns`` changes nothing (the nested SQuAD shape is told from the rows)."""
        from core.evaluation import EvaluationError

        params = dict(model_params or {})
        if text_column is not None or text_pair_column is not None:
            raise EvaluationError("invalid_columns", "a question-answering model reads context_column and "
                                  "question_column, not text_column / text_pair_column")
        if label_columns is not None and len(label_columns) != 1:
            raise EvaluationError("label_columns_mismatch", "a question-answering model is evaluated on one answers "
                                  "column")
        plan = QAEvaluationPlan(
            context_column=context_column or params.get("context_column") or DEFAULT_CONTEXT_COLUMN,
            question_column=question_column or params.get("question_column") or DEFAULT_QUESTION_COLUMN,
            answers_column=(answers_column or label_column or (label_columns or [None])[0]
                            or params.get("answers_column") or DEFAULT_ANSWERS_COLUMN),
            windows=serving_windows(params))
        if len({plan.context_column, plan.question_column, plan.answers_column}) != 3:
            raise EvaluationError("invalid_columns", "the context, question and answers columns must differ")
        return plan
