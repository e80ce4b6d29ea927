"""Evaluate a token-classification model on labelled sentences: predict each sentence's tags from its words and
score them against the gold tags (entity-level precision / recall / F1 per type and micro, token accuracy; plain
tag sets: token accuracy and per-tag F1). Span data (raw texts with character spans) is read as training reads it:
each text becomes the tokenizer's words and IOB2 tags (``ml.token_data.span_sentence``), and the spans snapped or
dropped on the way are reported (``data_report``); a dropped span is still a gold entity, which no prediction can
find: it counts as a false negative (``data_report["dropped_scored_as"]`` says so). Pure: the caller passes
``predict(sentences) -> [{"tags": [...]}]`` (and, for span data, the model's tokenizer)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.evaluation import EvaluationError
from core.task_types.tagging import IOB2, PLAIN, detect_scheme, entity_metrics, tag_metrics
from core.task_types.token_classification import TokenEvaluationPlan, reads_spans

from .evaluation import predict_chunks
from .token_data import SpanReport, span_sentence

EVALUATION_CHUNK = 256  # sentences per predict() call: progress and should_stop() are checked between chunks


def evaluate_sentences(rows: Iterable[Mapping[str, str]], plan: TokenEvaluationPlan,
                       predict: Callable[[list[list[str]]], list[dict]], *, tokenizer: Any = None,
                       chunk_size: int = EVALUATION_CHUNK,
                       progress: Callable[[float, dict], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The metrics of ``predict`` on every sentence of ``rows`` (``plan``: which columns; tags the model does not
    know raise :class:`EvaluationError` ``unknown_labels``). Entity metrics for prefixed tag schemes (as seqeval's
    default mode), per-tag metrics for plain tags; ``examples`` = sentences, ``tokens`` = words scored. Span data
    needs ``tokenizer`` (the model's) and adds ``data_report`` (``{"spans", "snapped", "dropped", "dropped_types",
    "dropped_scored_as": "false negatives"}``: every dropped span is in the support of its type); a blank text is
    skipped (``skipped_rows``)."""
    sentences, gold = [], []
    report, blank = SpanReport(), 0
    spans_data = reads_spans(plan)
    if spans_data and tokenizer is None:
        raise ValueError("span data is read with the model's tokenizer: pass tokenizer")
    for number, row in enumerate(rows, start=1):
        if spans_data:
            text, spans = plan.span_row(row, number)
            if not text.strip():
                blank += 1
                continue
            tokens, tags, alignment = span_sentence(tokenizer, text, spans)
            report.add(len(spans), alignment)
        else:
            tokens, tags = plan.sentence(row, number)
        sentences.append(tokens)
        gold.append(tags)
    if not sentences:
        raise EvaluationError("nothing_to_evaluate", "the dataset holds no sentence to evaluate on")
    unknown = sorted({tag for tags in gold for tag in tags} - set(plan.tags))
    if unknown:
        raise EvaluationError("unknown_labels", f"the dataset has tags the model does not know: "
                              f"{', '.join(map(repr, unknown[:20]))}", labels=unknown[:100])
    predicted = predict_chunks(len(sentences), lambda start, end: [r["tags"] for r in predict(sentences[start:end])],
                               chunk_size=chunk_size, progress=progress, should_stop=should_stop)
    if spans_data:  # IOB2 tags made here; a span no word could carry is a gold entity the model cannot find
        metrics = entity_metrics(gold, predicted, unscored=report.dropped_types)
        metrics.update(examples=len(sentences), scheme=IOB2)
        metrics.update(data_report={**report.as_dict(), "dropped_types": dict(sorted(report.dropped_types.items())),
                                    "dropped_scored_as": "false negatives"},
                       skipped_rows={"empty_sentence": blank})
        return metrics
    scheme = detect_scheme(gold)
    metrics = tag_metrics(gold, predicted) if scheme == PLAIN else entity_metrics(gold, predicted)
    metrics.update(examples=len(sentences), scheme=scheme)
    return metrics


def evaluate_model(rows: Iterable[Mapping[str, str]], plan: TokenEvaluationPlan,
                   predict: Callable[[list, list | None], list[dict]], predictor: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`evaluate_sentences` for ``ml.evaluation.evaluate_model``: span data becomes words with the model's
    own tokenizer, as its training data did."""
    return evaluate_sentences(rows, plan, lambda sentences: predict(sentences, None), tokenizer=predictor.tokenizer,
                              **kwargs)
