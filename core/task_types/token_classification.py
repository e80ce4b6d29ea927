"""Token classification: one tag per word (named entities, part-of-speech tags), declared once.

Training data: rows whose ``tokens_column`` and ``tags_column`` cells (default ``tokens`` / ``tags``) hold JSON arrays
of strings of equal length -- what a CoNLL upload becomes (``core.datasets``) and what a JSON Lines upload of token
lists holds. Tags may follow IOB2, IOB1 or BIOES/BILOU (entities are scored as spans: ``core.task_types.tagging``),
or carry no prefix at all (part-of-speech: scored per token). Or *span data* (:func:`reads_spans`): a
``text_column`` of raw texts and a ``spans_column`` of character spans (:func:`span_row`), which training and
evaluation turn into words and IOB2 tags with the model's tokenizer (``ml.token_data.span_sentence``).

Predictions (``ml.token_serving``): a raw text gives ``{"entities": [{"entity_group", "score", "word", "start",
"end"}]}`` (character offsets into the text); a pre-tokenized sentence gives ``{"tokens", "tags", "scores"}``. The
``predictions.result`` column stores that JSON; ``labels`` holds the entity types found (for plain tags: the tags), so
``?label=person`` is the same JSON membership test as a multi-label model's (jsonb ``@>`` on PostgreSQL,
``json_each`` on SQLite, on one job's rows found through the ``(job_id, index)`` b-tree); ``label`` / ``score`` hold
the first type found and the best entity score ("" and 0 when none), ``scores`` an empty object.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from . import HFHead, RequestError, TaskType, register
from .tagging import PLAIN, decode_entities, detect_scheme, entity_types

NAME = "token-classification"
MAX_TAG_CHARS = 100  # a tag is a short type name (B-creative-work), never a text
MAX_TAGS = 1000  # distinct tags of one tag set: more means a text column was picked


def _error(message: str, code: str = "invalid_tokens"):
    from core.datasets import DatasetError  # core.datasets imports this package

    return DatasetError(message, code=code, status=422)


def parse_list(cell: str, column: str, number: int) -> list[str]:
    """A cell holding a JSON array of strings (one sentence's tokens or tags); 422 otherwise."""
    try:
        values = json.loads(cell) if cell.strip() else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        values = None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _error(f"row {number}: column {column!r} must hold a JSON array of strings, got {cell[:60]!r}")
    return values


def sentence(row: Mapping[str, str], config: Any, number: int) -> tuple[list[str], list[str]]:
    """One row's (tokens, tags), checked: the same length, not empty, tokens not blank, tags short and without NUL."""
    tokens = parse_list(row.get(config.tokens_column, ""), config.tokens_column, number)
    tags = parse_list(row.get(config.tags_column, ""), config.tags_column, number)
    if len(tokens) != len(tags):
        raise _error(f"row {number}: {len(tokens)} tokens but {len(tags)} tags: give one tag per token",
                     "tokens_tags_mismatch")
    if not tokens:
        raise _error(f"row {number}: the sentence has no tokens", "empty_sentence")
    for token in tokens:
        if not token.strip() or "\x00" in token:
            raise _error(f"row {number}: a token is empty, blank or holds a NUL character")
    for tag in tags:
        if not tag.strip() or len(tag) > MAX_TAG_CHARS or "\x00" in tag:
            raise _error(f"row {number}: tag {tag[:60]!r} is empty, longer than {MAX_TAG_CHARS} characters or "
                         "holds a NUL character", "invalid_tag")
    return tokens, tags


def reads_spans(columns: Any) -> bool:
    """Whether token data is raw text with character spans (``spans_column`` set) rather than lists of tokens and
    tags: the one rule that validation, training and evaluation follow. ``columns``: a ``TrainConfig``, a
    :class:`TokenEvaluationPlan`, or a job's or model's params (a mapping)."""
    if isinstance(columns, Mapping):
        return columns.get("spans_column") is not None
    return getattr(columns, "spans_column", None) is not None


def _check_stride(config: Any) -> None:
    """Token windows must move on: ``stride`` below the window's content (``max_length`` minus [CLS] and [SEP])."""
    if config.stride >= config.max_length - 2:
        raise ValueError(f"stride ({config.stride}) must be less than max_length - 2 ({config.max_length - 2}): "
                         "windows must move on")


def span_text(cell: str) -> str:
    """The raw text of a span dataset's text cell: the cell itself, or the ``text`` of a Label Studio ``data``
    object (a JSON object cell)."""
    if cell.lstrip().startswith("{"):
        try:
            data = json.loads(cell)
        except (ValueError, RecursionError):
            return cell
        if isinstance(data, Mapping) and isinstance(data.get("text"), str):
            return data["text"]
    return cell


def _span(value: Any, text: str, number: int) -> tuple[int, int, str]:
    """One entity span ``{"start", "end", "label"}`` (Label Studio: ``"labels": [label]``), checked against the text."""
    if isinstance(value, Mapping) and "value" in value and isinstance(value["value"], Mapping):
        value = value["value"]  # a Label Studio result item
    if not isinstance(value, Mapping):
        raise _error(f"row {number}: a span must be an object with start, end and label", "invalid_spans")
    start, end = value.get("start"), value.get("end")
    label = value.get("label")
    if label is None and isinstance(value.get("labels"), list) and len(value["labels"]) == 1:
        label = value["labels"][0]
    if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
        raise _error(f"row {number}: span start and end must be integers, got {start!r} and {end!r}", "invalid_spans")
    if not 0 <= start < end <= len(text):
        raise _error(f"row {number}: span [{start}, {end}) is outside the text of {len(text)} characters (or "
                     "empty)", "invalid_spans")
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_TAG_CHARS - 2 or "\x00" in label:
        raise _error(f"row {number}: a span needs a label (a short string), got {label!r}", "invalid_spans")
    return start, end, label


def span_row(row: Mapping[str, str], config: Any, number: int) -> tuple[str, list[tuple[int, int, str]]]:
    """One row of a span dataset as (text, sorted spans), checked: offsets inside the text, a label each, no two
    spans overlapping. The text cell may be a Label Studio ``data`` object (its ``text``); the spans cell a JSON
    array of spans, or Label Studio ``annotations`` (the first annotation's ``result``)."""
    text = span_text(row.get(config.text_column, ""))
    if "\x00" in text:
        raise _error(f"row {number}: the text holds a NUL character")
    cell = row.get(config.spans_column, "")
    try:
        items = json.loads(cell) if cell.strip() else []
    except (ValueError, RecursionError):
        items = None
    if not isinstance(items, list):
        raise _error(f"row {number}: column {config.spans_column!r} must hold a JSON array of spans", "invalid_spans")
    if items and isinstance(items[0], Mapping) and isinstance(items[0].get("result"), list):
        items = items[0]["result"]  # Label Studio: the first annotation's regions
    spans = sorted(_span(item, text, number) for item in items)
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        if start < end:
            raise _error(f"row {number}: spans overlap (one ends at {end}, the next starts at {start})",
                         "overlapping_spans")
    return text, spans


def span_tags(types: Iterable[str]) -> list[str]:
    """The IOB2 tag set of a span dataset's entity types: ``O``, then ``B-``/``I-`` of each type, sorted."""
    return ["O", *(f"{prefix}-{kind}" for kind in sorted(set(types)) for prefix in ("B", "I"))]


def result_labels(result: Mapping[str, Any]) -> list[str]:
    """The labels a ``?label=`` filter matches for one result: its entity types (plain tags: its tags)."""
    if "entities" in result:
        return sorted({e["entity_group"] for e in result["entities"]})
    tags = result.get("tags") or []
    if detect_scheme([tags]) == PLAIN:
        return sorted(set(tags) - {"O"})
    return sorted({e.type for e in decode_entities(tags)})


@dataclass(frozen=True)
class TokenExport:
    """JSONL: one object per prediction (``index``, ``id``?, ``text``, then ``entities``, or ``tokens`` / ``tags`` /
    ``scores``); CSV: one line per entity (``index``, ``id``, ``entity_group``, ``start``, ``end``, ``word``,
    ``score``), or per token of a pre-tokenized sentence (``index``, ``id``, ``position``, ``token``, ``tag``,
    ``score``)."""

    tokens_input: bool
    with_id: bool = False
    columns: list[str] = field(init=False)
    csv_columns: list[str] = field(init=False)

    def __post_init__(self) -> None:
        head = ["index", *(["id"] if self.with_id else [])]
        body = ["tokens", "tags", "scores"] if self.tokens_input else ["entities"]
        object.__setattr__(self, "columns", [*head, "text", *body])
        per_line = ["position", "token", "tag", "score"] if self.tokens_input else \
            ["entity_group", "start", "end", "word", "score"]
        object.__setattr__(self, "csv_columns", ["index", "id", *per_line])

    def row(self, p: Any) -> dict:
        row: dict = {"index": p.index}
        if self.with_id:
            row["id"] = p.row_id
        row["text"] = p.text
        result = p.result or {}
        for column in self.columns[len(row):]:
            row[column] = result.get(column, [])
        return row

    def conll_lines(self, p: Any) -> list[str]:
        """A prediction as CoNLL lines: a pre-tokenized sentence's words and tags; a raw text's whitespace-separated
        words tagged IOB2 from its entities (a word an entity covers in part takes the entity's tag)."""
        from .conll import write_conll
        from .tagging import IOB2, align_spans, encode_entities

        result = p.result or {}
        if "tokens" in result:
            return list(write_conll([(result["tokens"], result["tags"])]))
        words, offsets, position = [], [], 0
        for word in p.text.split():
            start = p.text.index(word, position)
            words.append(word)
            offsets.append((start, start + len(word)))
            position = start + len(word)
        spans = [(e["start"], e["end"], e["entity_group"]) for e in result.get("entities", [])]
        tags = encode_entities(len(words), align_spans(offsets, spans).entities, IOB2)
        return list(write_conll([(words, tags)])) if words else ["\n"]

    def csv_rows(self, p: Any) -> list[dict]:
        result = p.result or {}
        if self.tokens_input:
            return [{"index": p.index, "id": p.row_id, "position": i, "token": token, "tag": tag, "score": score}
                    for i, (token, tag, score) in enumerate(zip(result.get("tokens", []), result.get("tags", []),
                                                                  result.get("scores", [])))]
        return [{"index": p.index, "id": p.row_id, "entity_group": e["entity_group"], "start": e["start"],
                 "end": e["end"], "word": e["word"], "score": e["score"]} for e in result.get("entities", [])]


@dataclass(frozen=True)
class TokenEvaluationPlan:
    """What a token model's evaluate job reads from each row, and the model's tags (stored in the job's params;
    ``task_type`` tells the worker which plan to read back): the tokens and tags columns, or for span data
    (:func:`reads_spans`) the text and spans columns."""

    tags: list[str]  # the model's tag set, in its order
    tokens_column: str | None = None
    tags_column: str | None = None
    text_column: str | None = None  # span data: the raw texts
    spans_column: str | None = None  # span data: each text's character spans
    task_type: str = NAME

    def to_params(self) -> dict:
        params = {"tags": list(self.tags), "task_type": self.task_type}
        if reads_spans(self):
            return {**params, "text_column": self.text_column, "spans_column": self.spans_column}
        return {**params, "tokens_column": self.tokens_column, "tags_column": self.tags_column}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "TokenEvaluationPlan":
        if reads_spans(params):
            return cls(tags=list(params["tags"]), text_column=params["text_column"],
                       spans_column=params["spans_column"])
        return cls(tags=list(params["tags"]), tokens_column=params["tokens_column"], tags_column=params["tags_column"])

    @property
    def columns(self) -> list[str]:
        if reads_spans(self):
            return [self.text_column, self.spans_column]
        return [self.tokens_column, self.tags_column]

    def sentence(self, row: Mapping[str, str], number: int) -> tuple[list[str], list[str]]:
        """One row's (tokens, gold tags), checked as training rows are (token data only)."""
        return sentence(row, SimpleNamespace(tokens_column=self.tokens_column, tags_column=self.tags_column), number)

    def span_row(self, row: Mapping[str, str], number: int) -> tuple[str, list[tuple[int, int, str]]]:
        """One row's (text, gold spans), checked as training rows are (span data only)."""
        return span_row(row, self, number)

    def check_labels(self, rows: Iterable[Mapping[str, str]]) -> None:
        """422 ``unknown_labels`` for tags (span data: entity types) the model cannot predict (a dataset of another
        tag set); 422 for bad rows."""
        from core.evaluation import EvaluationError

        spans = reads_spans(self)
        known, unknown = set(entity_types(self.tags) if spans else self.tags), set()
        for number, row in enumerate(rows, start=1):
            labels = ([kind for _, _, kind in self.span_row(row, number)[1]] if spans
                      else self.sentence(row, number)[1])
            unknown.update(label for label in labels if label not in known)
        if unknown:
            listed = sorted(unknown)[:100]
            what = "entity types" if spans else "tags"
            model_knows = sorted(known) if spans else self.tags
            raise EvaluationError("unknown_labels", f"the dataset has {what} the model does not know "
                                  f"({', '.join(map(repr, listed[:20]))}); the model knows "
                                  f"{', '.join(map(repr, model_knows))}", labels=listed)


@register
class TokenClassification(TaskType):
    """Named entities and other per-word tags (``BertForTokenClassification``)."""

    name = NAME
    pipeline_tag = "token-classification"
    label = "Token classification (named entities, tags)"
    default_metric = "f1"
    metrics = ("f1", "precision", "recall", "accuracy", "val_loss")
    # label_column(s): only as the tags column itself (a validated request stores them resolved so)
    request_fields = frozenset({"tokens_column", "tags_column", "text_column", "spans_column", "label_column",
                                "label_columns"})
    families = ("bert", "distilbert", "bert_lstm")
    # dropout -> linear on every token, as the platform's token heads (bert_lstm's LSTM has no transformers class);
    # DistilBertForTokenClassification's dropout is the encoder's own
    hf = HFHead(
        architectures={"bert": "BertForTokenClassification", "distilbert": "DistilBertForTokenClassification"},
        layers={"bert": {"classifier": "labels"}, "distilbert": {"classifier": "labels"}},
        dropout_field={"bert": "classifier_dropout"},
        task="tags",
    )
    reads_words_in_cells = True  # a classify job's tokens column holds JSON arrays of words

    def check_classify_request(self, request: Any, model_id: Any, model_params: Mapping[str, Any]) -> None:
        """Texts or pre-tokenized ``tokens``, never pairs; then text classification's rules."""
        if request.with_pairs:
            raise RequestError("pairs_not_supported", f"model {model_id} is a token-classification model: "
                               "send texts or tokens, not pairs")
        super().check_classify_request(request, model_id, model_params)

    def misdirected(self, request: Any, model_id: Any, model_task_type: str) -> RequestError | None:
        """``tokens`` and ``aggregation_strategy`` are for token models only."""
        if request.with_tokens:
            return RequestError("tokens_not_supported", f"model {model_id} is a {model_task_type} model: tokens "
                                "(pre-tokenized sentences) are for token-classification models; send texts")
        if getattr(request, "aggregation_strategy", None) is not None:
            return RequestError("aggregation_not_supported", f"model {model_id} is a {model_task_type} model: "
                                "aggregation_strategy applies to token-classification models")
        return None

    def text_columns(self, config: Any) -> list[str]:
        """Span data: the text column; token lists: the tokens column."""
        return [config.text_column] if reads_spans(config) else [config.tokens_column]

    def classify_columns(self, request: Any, model_id: Any, model_params: Mapping[str, Any]) -> dict[str, Any]:
        """A model trained on token lists reads its tokens column (JSON arrays of words) as the text column; one
        trained on span data its text column (text classification's rule)."""
        if request.text_column is None and request.text_template is None and \
                model_params.get("text_column") is None and model_params.get("tokens_column") is not None:
            return {"text_column": model_params["tokens_column"]}
        return super().classify_columns(request, model_id, model_params)

    def resolve_columns(self, config: Any) -> bool:
        """Span data (``spans_column`` with ``text_column``, default ``text``) or token lists (``tokens_column`` /
        ``tags_column``, default ``tokens`` / ``tags``); the spans or the tags are the one label column."""
        if reads_spans(config):
            if config.tokens_column is not None or config.tags_column is not None:
                raise ValueError("give spans_column (with text_column) or tokens_column / tags_column, not both")
            config.text_column = config.text_column or "text"
            if config.text_column == config.spans_column:
                raise ValueError("text_column and spans_column must differ")
            _check_stride(config)
            given = config.label_columns or ([config.label_column] if config.label_column else [])
            if given and given != [config.spans_column]:
                raise ValueError("token classification reads its labels from spans_column: label_column(s) do not "
                                 "apply")
            config.label_columns, config.label_column = [config.spans_column], config.spans_column
            return True
        if config.text_column is not None:
            raise ValueError("text_column goes with spans_column (entity spans over raw text); for token lists "
                             "give tokens_column / tags_column")
        config.tokens_column = config.tokens_column or "tokens"
        config.tags_column = config.tags_column or "tags"
        if config.tokens_column == config.tags_column:
            raise ValueError("tokens_column and tags_column must differ")
        _check_stride(config)
        given = config.label_columns or ([config.label_column] if config.label_column else [])
        if given and given != [config.tags_column]:  # only a stored request's own resolution passes (see below)
            raise ValueError("token classification reads its labels from tags_column: label_column(s) do not apply")
        # the tags are the one label column: job params, the model row and the label checks all read label_columns
        config.label_columns, config.label_column = [config.tags_column], config.tags_column
        return True

    def evaluation_plan_from_params(self, params: Mapping[str, Any]) -> "TokenEvaluationPlan":
        """A :class:`TokenEvaluationPlan`."""
        return TokenEvaluationPlan.from_params(params)

    def hf_import_fields(self, labels: Sequence[str], max_length: int) -> dict[str, Any]:
        """The windows' overlap a training request gets by default, and the scheme the tag set follows."""
        from core.options import TrainConfig  # core.options imports this package

        return {"stride": TrainConfig.model_fields["stride"].default, "scheme": detect_scheme([list(labels)])}

    def check_training_rows(self, rows: Iterable[Mapping[str, str]], config: Any, *,
                            known: Mapping[str, set[str]] | None = None) -> dict[str, Counter]:
        """Every row a sentence of tokens and as many tags; at least 2 distinct tags; ``known``: the training
        data's tag set, which a validation dataset's tags must stay within."""
        if reads_spans(config):
            return self._check_span_rows(rows, config, known)
        task = config.tags_column
        counts: Counter = Counter()
        for number, row in enumerate(rows, start=1):
            _, tags = sentence(row, config, number)
            counts.update(tags)
            if len(counts) > MAX_TAGS:
                raise _error(f"column {task!r} has more than {MAX_TAGS} distinct tags: is it a text column?",
                             "too_many_labels")
        if known is not None:
            unknown = sorted(set(counts) - set(known.get(task, set())))
            if unknown:
                raise _error(f"the validation data has tags the training data lacks: {', '.join(unknown[:10])}",
                             "unknown_labels")
        elif len(counts) < 2:
            raise _error(f"column {task!r} needs at least 2 distinct tags; found {', '.join(counts) or 'none'}",
                         "too_few_classes")
        return {task: counts}

    def _check_span_rows(self, rows: Iterable[Mapping[str, str]], config: Any,
                         known: Mapping[str, set[str]] | None) -> dict[str, Counter]:
        """Span data: every row's spans checked (:func:`span_row`); counts per entity type; at least one entity."""
        task = config.spans_column
        counts: Counter = Counter()
        for number, row in enumerate(rows, start=1):
            counts.update(label for _, _, label in span_row(row, config, number)[1])
            if len(counts) > MAX_TAGS:
                raise _error(f"more than {MAX_TAGS} entity types in {task!r}", "too_many_labels")
        if known is not None:
            unknown = sorted(set(counts) - set(known.get(task, set())))
            if unknown:
                raise _error(f"the validation data has entity types the training data lacks: {', '.join(unknown)}",
                             "unknown_labels")
        elif not counts:
            raise _error(f"column {task!r} holds no entity span: there is nothing to learn", "too_few_classes")
        return {task: counts}

    def prediction_columns(self, result: Mapping[str, Any]) -> dict[str, Any]:
        labels = result_labels(result)
        if "entities" in result:
            score = max((float(e["score"]) for e in result["entities"]), default=0.0)
        else:
            score = max((float(s) for s in result.get("scores") or []), default=0.0)
        return {"result": dict(result), "label": labels[0] if labels else "", "score": score, "scores": {},
                "tasks": None, "labels": labels}

    def prediction_fields(self, prediction: Any) -> dict[str, Any]:
        """``entities`` (a raw text), or ``tokens``, ``tags``, ``scores`` (a pre-tokenized sentence)."""
        return dict(prediction.result or {"entities": []})

    def export_layout(self, *, model_tasks: Mapping[str, Sequence[str]] | None, model_params: Mapping[str, Any],
                      first: Any | None, with_id: bool, with_pair: bool) -> TokenExport:
        tokens_input = first is not None and "tokens" in (first.result or {})
        return TokenExport(tokens_input=tokens_input, with_id=with_id)

    def plan_evaluation(self, model_family: str, model_tasks: Mapping[str, list[str]],
                        model_params: Mapping[str, Any] | None, *, text_column: str | None = None,
                        text_pair_column: str | None = None, label_column: str | None = None,
                        label_columns: list[str] | None = None,
                        dataset_columns: Sequence[str] | None = None) -> TokenEvaluationPlan:
        """The data is read as the model was trained: tokens and tags, where ``text_column`` names the tokens column
        and ``label_column`` the tags column; or, for a model trained on span data, texts and spans, where
        ``text_column`` names the text column and ``label_column`` the spans column (default: the model's)."""
        from core.evaluation import EvaluationError

        params = dict(model_params or {})
        if text_pair_column is not None:
            raise EvaluationError("text_pair_mismatch", "a token-classification model takes no text_pair_column")
        if label_columns is not None and len(label_columns) != 1:
            raise EvaluationError("label_columns_mismatch", "a token model is evaluated on one tags column")
        tags = list(next(iter(model_tasks.values())))
        label = label_column or (label_columns or [None])[0]
        if reads_spans(params):
            text = text_column or params.get("text_column") or "text"
            spans = label or params["spans_column"]
            if text == spans:
                raise EvaluationError("invalid_columns", "the text and spans columns must differ")
            return TokenEvaluationPlan(tags=tags, text_column=text, spans_column=spans)
        tags_column = label or params.get("tags_column") or "tags"
        tokens_column = text_column or params.get("tokens_column") or "tokens"
        if tokens_column == tags_column:
            raise EvaluationError("invalid_columns", "the tokens and tags columns must differ")
        return TokenEvaluationPlan(tags=tags, tokens_column=tokens_column, tags_column=tags_column)

    def dataset_mismatch(self, columns: Sequence[str], list_columns: Collection[str],
                         used: Sequence[str] = (), model_params: Mapping[str, Any] | None = None) -> str | None:
        """A token dataset has at least two columns of token lists (tokens and tags); the plan's columns must be
        two of them. A model trained on span data (:func:`reads_spans` of ``model_params``) reads a text and a
        spans column instead: neither may hold token lists, nor may every column of the dataset."""
        lists = set(list_columns) & set(columns)
        if reads_spans(model_params or {}):
            if columns and set(columns) <= lists:
                return ("it is a token dataset (every column holds token lists); a model trained on span data is "
                        "evaluated on texts with character spans")
            listed = [c for c in used if c in lists]
            if listed:
                return (f"column {listed[0]!r} holds token lists (JSON arrays of strings); a model trained on span "
                        "data reads a text column and a column of character spans")
            return None
        if len(lists) < 2:
            return ("it is not a token dataset (a token dataset has a tokens and a tags column of JSON arrays of "
                    "strings: a CoNLL upload, or JSON Lines of token lists); a token-classification model is "
                    "evaluated on a token dataset")
        plain = [c for c in used if c in columns and c not in lists]
        if plain:
            return (f"column {plain[0]!r} does not hold token lists (JSON arrays of strings); its token lists are "
                    f"{', '.join(map(repr, sorted(lists)))}")
        return None

    def label_condition(self, session: Any, label: str, model_params: Mapping[str, Any]) -> Any:
        """The rows with at least one entity of type ``label`` (JSON membership in ``labels``; see the module)."""
        from .text_classification import predicted_label_is

        return predicted_label_is(session, label, multi_label=True)
