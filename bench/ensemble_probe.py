"""Probe (issue 8): would an ensemble reach the quality goal inside the 30-minute budget?

    .venv/bin/python bench/ensemble_probe.py --seeds 42,43 --set epochs=2 --json /tmp/ensemble.json

Same split and held-out set as ``bench/training_quality.py``. Trains one ``bert`` model per seed with the platform
defaults (+ ``--set`` overrides) through ``ml.loop.train_classifier``, serves each saved model with
``ml.inference.Predictor`` on the 6,704 held-out tweets, and fits the TF-IDF + logistic-regression reference on the
same training rows. It then reports held-out accuracy / macro-F1 of each member, of the mean of the members'
probabilities, and of each with the TF-IDF model's probabilities mixed in at a weight fixed in advance
(``--tfidf-weight``, default 1/3: no weight is tuned on the held-out set). A grid of other weights is printed as a
diagnostic only. Minutes are the sum of the members' ``train_classifier`` calls (2 cores).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_quality as tq  # noqa: E402  (same split, data and option parsing)


def member_probabilities(train: list[dict], test: list[dict], overrides: dict, cache_dir: Path):
    """Train one bert model; (labels, held-out probabilities in label order, seconds, validation history)."""
    from core.options import TrainConfig
    from ml.inference import Predictor
    from ml.loop import train_classifier

    config = TrainConfig.model_validate({"text_column": "text", "label_column": "sentiment", "family": "bert",
                                         **overrides})
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        result = train_classifier(train, config, Path(out) / "model", encoder_cache_dir=cache_dir,
                                  progress=tq._printer(f"seed {config.seed}"))
        seconds = time.monotonic() - started
        predictions = Predictor.load(Path(out) / "model").predict([r["text"] for r in test])
    labels = sorted(predictions[0]["scores"])
    probabilities = [[p["scores"][label] for label in labels] for p in predictions]
    return labels, probabilities, seconds, result.metrics.get("best_step")


def tfidf_probabilities(train: list[dict], test: list[dict]):
    """The reference model of training_quality.py, as probabilities (classes in sorted order)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    started = time.monotonic()
    features = make_union(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True))
    model = make_pipeline(features, LogisticRegression(max_iter=2000, C=4.0))
    model.fit([r["text"] for r in train], [r["sentiment"] for r in train])
    return list(model.classes_), model.predict_proba([r["text"] for r in test]).tolist(), time.monotonic() - started


def score(labels: list[str], probabilities, truth: list[str]) -> dict:
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    predicted = [labels[i] for i in np.asarray(probabilities).argmax(axis=1)]
    return {"accuracy": round(accuracy_score(truth, predicted), 4),
            "macro_f1": round(f1_score(truth, predicted, average="macro"), 4)}


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="42,43", help="one bert member per seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tfidf-weight", type=float, default=1 / 3)
    parser.add_argument("--data-dir", type=Path, default=tq.DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=tq.REPO / ".bench" / "encoders")
    parser.add_argument("--json", type=Path, default=None, help="every number, and the probabilities")
    parser.add_argument("--limit", type=int, default=None, help="first N training rows only (smoke runs)")
    args = parser.parse_args(argv)

    path = args.data_dir / "tweets_sentiment.csv"
    if not path.exists():
        print(f"no data at {path}: this probe needs ../shared/datasets", file=sys.stderr)
        return 2
    overrides = {k: tq.parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    rows = tq.read_csv(path)
    train_idx, test_idx = tq.held_out_split(rows)
    train, test = [rows[i] for i in train_idx[: args.limit]], [rows[i] for i in test_idx]
    truth = [r["sentiment"] for r in test]

    tfidf_labels, tfidf, tfidf_seconds = tfidf_probabilities(train, test)
    report: dict = {"overrides": overrides, "tfidf": {**score(tfidf_labels, tfidf, truth),
                                                       "seconds": round(tfidf_seconds, 1)}, "members": []}
    print(f"TF-IDF: {report['tfidf']}", flush=True)
    members = []
    for seed in (int(s) for s in args.seeds.split(",")):
        labels, probabilities, seconds, best_step = member_probabilities(train, test, {**overrides, "seed": seed},
                                                                         args.cache_dir)
        assert labels == tfidf_labels
        members.append(np.asarray(probabilities))
        report["members"].append({"seed": seed, "seconds": round(seconds, 1), "best_step": best_step,
                                  **score(labels, probabilities, truth)})
        print(f"member seed {seed}: {report['members'][-1]}", flush=True)
        if args.json:
            args.json.write_text(json.dumps({**report, "probabilities": {
                "tfidf": tfidf, "members": [m.tolist() for m in members]}}))

    w = args.tfidf_weight
    tfidf_array = np.asarray(tfidf)
    combos = {"first member": members[0], "mean of members": sum(members) / len(members),
              f"first member + TF-IDF (w={w:.2f})": (1 - w) * members[0] + w * tfidf_array,
              f"mean of members + TF-IDF (w={w:.2f})": (1 - w) * sum(members) / len(members) + w * tfidf_array}
    report["combinations"] = {name: score(tfidf_labels, p, truth) for name, p in combos.items()}
    report["minutes_members"] = round(sum(m["seconds"] for m in report["members"]) / 60, 1)
    report["diagnostic_tfidf_weight_grid"] = {
        f"{g:.1f}": score(tfidf_labels, (1 - g) * sum(members) / len(members) + g * tfidf_array, truth)["accuracy"]
        for g in np.arange(0.0, 0.7, 0.1)}
    print(json.dumps({k: v for k, v in report.items() if k != "members"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**report, "probabilities": {
            "tfidf": tfidf, "members": [m.tolist() for m in members]}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
