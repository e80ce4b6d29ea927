"""What the commands print: the API's JSON with ``--json``, rich tables for people otherwise (stdout)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

stdout = Console(soft_wrap=False, highlight=False)
MAX_CELL = 60  # characters of a text shown in a table cell


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout, one document (``--json``)."""
    print(json.dumps(data, ensure_ascii=False, indent=2))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def table(rows: Iterable[dict], columns: Sequence[tuple[str, str]], title: str | None = None) -> None:
    """``rows`` as a table of ``columns`` = ``(key, heading)`` pairs."""
    out = Table(title=title, show_lines=False)
    for _, heading in columns:
        out.add_column(heading, overflow="fold")
    for row in rows:
        out.add_row(*(_cell(row.get(key)) for key, _ in columns))
    stdout.print(out)


def record(data: dict, keys: Sequence[str]) -> None:
    """One object's ``keys`` as ``key: value`` lines."""
    width = max(len(k) for k in keys)
    for key in keys:
        if key in data:
            stdout.print(f"{key:<{width}}  {_cell(data[key]) if key != 'metrics' else _metrics(data[key])}",
                         markup=False)


def _metrics(metrics: dict | None) -> str:
    """The headline numbers of a job's or model's metrics (the full set is in ``--json``)."""
    if not metrics:
        return ""
    keys = ("accuracy", "macro_f1", "micro_f1", "examples", "train_examples", "validation_examples")
    shown = {k: metrics[k] for k in keys if isinstance(metrics.get(k), (int, float))}
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


JOB_COLUMNS = (("id", "id"), ("type", "type"), ("status", "status"), ("progress", "progress"),
               ("model_id", "model"), ("dataset_id", "dataset"), ("created_at", "created"), ("error", "error"))
JOB_KEYS = ("id", "type", "status", "progress", "eta_seconds", "model_id", "dataset_id", "created_at", "started_at",
            "finished_at", "error", "metrics")
MODEL_COLUMNS = (("id", "id"), ("name", "name"), ("version", "version"), ("family", "family"), ("labels", "labels"),
                 ("created_at", "created"))
DATASET_COLUMNS = (("id", "id"), ("name", "name"), ("rows", "rows"), ("columns", "columns"), ("format", "format"),
                   ("created_at", "created"))


def predictions(items: list[dict]) -> None:
    """A classify job's predictions: text, label(s) and score (multitask: one label column per task); a token
    model's: one line per entity (type, span, words, score), or per sentence its tags; a QA model's: the question,
    its best answer, the answer's span of the context and its score; a multiple-choice model's: the context, the
    chosen choice (its position and text) and its probability."""
    if items and "entities" in items[0]:
        rows = [{"index": p["index"], "type": e["entity_group"], "span": f"{e['start']}-{e['end']}",
                 "word": e["word"], "score": e["score"]} for p in items for e in p["entities"]]
        table(rows, [("index", "#"), ("type", "entity"), ("span", "chars"), ("word", "text"), ("score", "score")],
              title=f"{len(rows)} entities in {len(items)} texts")
        return
    if items and "question" in items[0] and "answer" in items[0]:  # question answering: the best answer
        rows = [{"index": p["index"], "question": p["question"], "answer": p["answer"] or "(no answer)",
                 "span": f"{p['start']}-{p['end']}", "score": p["score"]} for p in items]
        table(rows, [("index", "#"), ("question", "question"), ("answer", "answer"), ("span", "chars"),
                     ("score", "score")])
        return
    if items and "tags" in items[0]:
        rows = [{"index": p["index"], "tagged": " ".join(w if t == "O" else f"{w}/{t}" for w, t in
                                                        zip(p["tokens"], p["tags"]))} for p in items]
        table(rows, [("index", "#"), ("tagged", "tokens/tags")])
        return
    if items and "choice_index" in items[0]:  # a multiple-choice model's: the chosen choice and its probability
        rows = [{"index": p["index"], "text": p["text"], "choice": p["choice"], "position": p["choice_index"],
                 "score": p["scores"][p["choice_index"]]} for p in items]
        table(rows, [("index", "#"), ("text", "context"), ("position", "choice #"), ("choice", "choice"),
                     ("score", "score")])
        return
    if items and items[0].get("tasks"):
        tasks = list(items[0]["tasks"])
        rows = [{"index": p["index"], "text": p["text"], **{t: (p["tasks"].get(t) or {}).get("label") for t in tasks}}
                for p in items]
        table(rows, [("index", "#"), ("text", "text"), *((t, t) for t in tasks)])
        return
    rows = [{**p, "label": p.get("label") if p.get("labels") is None else "|".join(p["labels"])} for p in items]
    table(rows, [("index", "#"), ("text", "text"), ("label", "label"), ("score", "score")])
