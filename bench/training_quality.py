"""Benchmark: the platform's DEFAULT training settings, judged on held-out tweets they never train on.

    .venv/bin/python bench/training_quality.py                          # every family, full data (slow on CPU)
    .venv/bin/python bench/training_quality.py --families bert --json bench/results/quality.json
    .venv/bin/python bench/training_quality.py --set epochs=1 --set pooling=cls   # try other settings

The 33,519 tweets of ``../shared/datasets/tweets_sentiment.csv`` are split once (seeded, stratified on sentiment):
20% is the **held-out test set**, never seen in training; the other 80% is what a user would upload, trained with
``core.options`` defaults (which hold out their own validation split for early stopping / the best checkpoint).
``multitask`` trains on ``tweets_multitask.csv`` (same tweets, tasks ``sentiment`` + ``topic``) with the same split
and is judged on sentiment. The reference is TF-IDF + logistic regression on the same split.

Each run prints training wall time (data preparation, tokenization, training, evaluation and saving: the whole
``train_classifier`` call), held-out accuracy and macro-F1 (sklearn), the ratio to ``bert`` and to the reference,
and the validation history. The goal (issue 8): bert >= 0.82 held-out accuracy within 30 minutes on 2 cores; every
family within 1 point of bert; multitask within 1 point of single-task on sentiment.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FAMILIES = ("bert", "distilbert", "bert_lstm", "multitask")
DATA_DIR = REPO / ".." / "shared" / "datasets"
TEST_FRACTION = 0.2
SPLIT_SEED = 1234


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def held_out_split(rows: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(train, test) row indices: 20% test, stratified on sentiment, the same for every family and run."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(rows)))
    train, test = train_test_split(indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                   stratify=[r["sentiment"] for r in rows])
    return sorted(train), sorted(test)


def tfidf_reference(train: list[dict], test: list[dict]) -> dict:
    """TF-IDF (word 1-2 grams + char 2-5 grams) + logistic regression: the classical baseline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline, make_union

    started = time.monotonic()
    features = make_union(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True))
    model = make_pipeline(features, LogisticRegression(max_iter=2000, C=4.0))
    model.fit([r["text"] for r in train], [r["sentiment"] for r in train])
    predicted = model.predict([r["text"] for r in test])
    truth = [r["sentiment"] for r in test]
    return {"accuracy": round(accuracy_score(truth, predicted), 4),
            "macro_f1": round(f1_score(truth, predicted, average="macro"), 4),
            "train_seconds": round(time.monotonic() - started, 1)}


def parse_value(text: str):
    """``--set key=value`` values: JSON when it parses (numbers, true, null, lists), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class CheckpointTrace:
    """``--trace``: a CPU copy of the weights at every validation evaluation, so the held-out set can judge each
    evaluation's checkpoint and averages of the last k of them (what a different epoch count, a different
    selection rule or checkpoint averaging would have saved) from one training run. Diagnostic only: it wraps
    ``ml.loop._Best.update``, the one place that sees the model at every evaluation."""

    def __init__(self) -> None:
        self.states: list[tuple[int, dict]] = []

    def __enter__(self) -> "CheckpointTrace":
        import ml.loop

        self._original = original = ml.loop._Best.update
        trace = self

        def update(best, model, step, record, evaluation):
            trace.states.append((step, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}))
            return original(best, model, step, record, evaluation)

        ml.loop._Best.update = update
        return self

    def __exit__(self, *exc) -> None:
        import ml.loop

        ml.loop._Best.update = self._original

    def candidates(self) -> list[tuple[str, dict]]:
        """(name, state) for every evaluation's checkpoint and the average of the last k = 2.. of them."""
        out = [(f"step {step}", state) for step, state in self.states]
        for k in range(2, len(self.states) + 1):
            last = self.states[-k:]
            average = {}
            for key, value in last[-1][1].items():
                if value.is_floating_point():
                    average[key] = sum(state[key] for _, state in last) / k
                else:
                    average[key] = value
            out.append((f"mean of last {k} (steps {last[0][0]}..{last[-1][0]})", average))
        return out


def judge_trace(trace: CheckpointTrace, model_dir: Path, test: list[dict]) -> list[dict]:
    """Held-out accuracy / macro-F1 of every traced candidate, served by the saved model's Predictor."""
    from sklearn.metrics import accuracy_score, f1_score

    from ml.inference import Predictor

    predictor = Predictor.load(model_dir)
    truth = [r["sentiment"] for r in test]
    rows = []
    for name, state in trace.candidates():
        predictor.model.load_state_dict(state)
        predictions = predictor.predict([r["text"] for r in test])
        results = [p["tasks"]["sentiment"] if "tasks" in p else p for p in predictions]
        predicted = [r["label"] for r in results]
        rows.append({"checkpoint": name, "held_out_accuracy": round(accuracy_score(truth, predicted), 4),
                     "held_out_macro_f1": round(f1_score(truth, predicted, average="macro"), 4),
                     # per held-out row, probabilities in label order: for ensembles / significance offline
                     "probabilities": [[round(r["scores"][label], 5) for label in sorted(r["scores"])]
                                       for r in results]})
        print(f"  trace {name:<40} held-out accuracy {rows[-1]['held_out_accuracy']:.4f} "
              f"macro-F1 {rows[-1]['held_out_macro_f1']:.4f}", flush=True)
    return rows


def run_family(family: str, train: list[dict], test: list[dict], overrides: dict, cache_dir: Path,
               trace: bool = False) -> dict:
    """Train ``family`` with the defaults (+ overrides) on ``train``; accuracy / macro-F1 on ``test``."""
    import contextlib

    from sklearn.metrics import accuracy_score, f1_score

    from core.options import TrainConfig
    from ml.inference import Predictor
    from ml.loop import train_classifier

    labels = {"label_columns": ["sentiment", "topic"]} if family == "multitask" else {"label_column": "sentiment"}
    config = TrainConfig.model_validate({"text_column": "text", "family": family, **labels, **overrides})
    traced = CheckpointTrace() if trace else None
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        with traced or contextlib.nullcontext():
            result = train_classifier(train, config, Path(out) / "model", encoder_cache_dir=cache_dir,
                                      progress=_printer(family))
        seconds = time.monotonic() - started
        predictor = Predictor.load(Path(out) / "model")
        predictions = predictor.predict([r["text"] for r in test])
        trace_rows = judge_trace(traced, Path(out) / "model", test) if traced else None
    predicted = [p["tasks"]["sentiment"]["label"] if "tasks" in p else p["label"] for p in predictions]
    truth = [r["sentiment"] for r in test]
    metrics = result.metrics
    return {
        "family": family,
        "train_seconds": round(seconds, 1),
        "held_out_accuracy": round(accuracy_score(truth, predicted), 4),
        "held_out_macro_f1": round(f1_score(truth, predicted, average="macro"), 4),
        "validation_accuracy": metrics.get("accuracy"),
        "best_step": metrics.get("best_step"),
        "stopped_early": metrics.get("stopped_early"),
        "history": metrics.get("history"),
        **({"trace": trace_rows} if trace_rows is not None else {}),
        "settings": {k: v for k, v in config.model_dump().items() if k in overrides or k in (
            "epochs", "batch_size", "learning_rate", "max_length", "pooling", "text_normalization", "eval_steps",
            "early_stopping_patience", "metric", "label_smoothing", "layer_lr_decay")},
    }


def _printer(family: str):
    last = [0.0]

    def progress(fraction: float, info: dict) -> None:
        now = time.monotonic()
        if now - last[0] >= 30 or info.get("phase") in ("epoch_end", "done") or "history" in info:
            last[0] = now
            shown = {k: info[k] for k in ("phase", "epoch", "step", "total_steps", "train_loss", "accuracy",
                                          "macro_f1", "eta_seconds") if k in info}
            print(f"  [{family}] {fraction:6.1%} {shown}", flush=True)

    return progress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, default: all")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a default training option (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training rows (smoke runs)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench" / "encoders")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    parser.add_argument("--trace", action="store_true",
                        help="also judge every evaluation's checkpoint and averages of the last k on the held-out "
                             "set (diagnostic; training time then includes copying the weights)")
    args = parser.parse_args(argv)

    sentiment_path, multitask_path = args.data_dir / "tweets_sentiment.csv", args.data_dir / "tweets_multitask.csv"
    if not sentiment_path.exists():
        print(f"no data at {sentiment_path}: this benchmark needs ../shared/datasets", file=sys.stderr)
        return 2
    overrides = dict(item.split("=", 1) for item in args.set)
    overrides = {k: parse_value(v) for k, v in overrides.items()}
    families = [f.strip() for f in args.families.split(",") if f.strip()]

    import torch

    rows = read_csv(sentiment_path)
    train_idx, test_idx = held_out_split(rows)
    if args.limit:
        train_idx = train_idx[: args.limit]
    test = [rows[i] for i in test_idx]
    print(f"tweets: {len(rows)} -> train {len(train_idx)}, held-out test {len(test)}; torch threads "
          f"{torch.get_num_threads()}; overrides {overrides or 'none'}", flush=True)
    report: dict = {"rows": len(rows), "train_rows": len(train_idx), "test_rows": len(test), "overrides": overrides,
                    "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    report["reference"] = tfidf_reference([rows[i] for i in train_idx], test)
    print(f"TF-IDF + logistic regression: {report['reference']}", flush=True)

    multitask_rows = read_csv(multitask_path) if "multitask" in families and multitask_path.exists() else None
    results = []
    for family in families:
        if family == "multitask":
            if multitask_rows is None:
                print("skipping multitask: tweets_multitask.csv not found", file=sys.stderr)
                continue
            assert [r["text"] for r in multitask_rows] == [r["text"] for r in rows], "the two corpora must align"
            train_rows = [multitask_rows[i] for i in train_idx]
        else:
            train_rows = [rows[i] for i in train_idx]
        print(f"== {family}", flush=True)
        results.append(run_family(family, train_rows, test, overrides, args.cache_dir, trace=args.trace))
        print(json.dumps({k: v for k, v in results[-1].items() if k not in ("history", "trace")}), flush=True)
        if args.json:  # after every family: a stopped run keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({**report, "results": results}, indent=2))

    bert = next((r for r in results if r["family"] == "bert"), None)
    print("\nfamily       minutes  held-out acc  macro-F1  vs bert  vs TF-IDF")
    for r in results:
        versus = f"{r['held_out_accuracy'] - bert['held_out_accuracy']:+.4f}" if bert else "   n/a"
        print(f"{r['family']:<12} {r['train_seconds'] / 60:7.1f}  {r['held_out_accuracy']:12.4f}  "
              f"{r['held_out_macro_f1']:8.4f}  {versus:>7}  {r['held_out_accuracy'] - report['reference']['accuracy']:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
