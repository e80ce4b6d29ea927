"""Benchmark: multiple choice on real text -- the tweets' topic as a question with six choices (issue 18).

    .venv/bin/python bench/mc_topics.py --json bench/results/mc_topics.json          # full data (GPU advised)
    .venv/bin/python bench/mc_topics.py --limit 300 --encoder PATH --epochs 1        # a quick run

How the set is built (:func:`topic_rows`): each tweet of ``../shared/datasets/tweets_multitask.csv`` is a context, the
question is "What is this tweet about?", the choices are the six topics as short phrases (:data:`TOPIC_PHRASES`) in
an order shuffled per row (seeded by the row's number, so every run sees the same rows), and the label is the
position of the tweet's topic. The tweets are split once like ``bench/training_quality.py`` (20% held out, seed
1234, stratified on the topic). A ``multiple-choice`` model trains through ``ml.loop.train_classifier`` with
``epochs`` and ``max_length`` 128 given and the platform's defaults otherwise, and answers the held-out rows through
``ml.mc_serving.ChoicePredictor`` (the batching engine, as a classify job does); a ``text-classification`` model
trains on the same rows' (tweet, topic) and is judged the same way. Printed: held-out accuracy and macro-F1 of both,
their training time.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = REPO / ".." / "shared" / "datasets" / "tweets_multitask.csv"
QUESTION = "What is this tweet about?"
TOPIC_PHRASES = {"airline": "an airline or a flight", "nfl": "American football, the NFL",
                 "self_driving": "self-driving cars", "coachella": "the Coachella music festival",
                 "apple": "Apple and its products", "other": "something else"}
TEST_FRACTION, SPLIT_SEED = 0.2, 1234


def topic_rows(tweets: list[dict[str, str]], seed: int = SPLIT_SEED) -> list[dict[str, str]]:
    """The multiple-choice rows of ``tweets`` (``text``, ``topic``): ``context``, ``question``, ``choices`` (a JSON
    array: the six topic phrases, shuffled per row), ``label`` (the true topic's position), ``topic``."""
    rows = []
    for number, tweet in enumerate(tweets):
        phrases = list(TOPIC_PHRASES.values())
        random.Random(seed * 1_000_003 + number).shuffle(phrases)
        rows.append({"context": tweet["text"], "question": QUESTION, "choices": json.dumps(phrases),
                     "label": str(phrases.index(TOPIC_PHRASES[tweet["topic"]])), "topic": tweet["topic"]})
    return rows


def held_out_split(rows: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(train, test) row indices: 20% test, stratified on the topic."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(list(range(len(rows))), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                   stratify=[r["topic"] for r in rows])
    return sorted(train), sorted(test)


def _scores(gold: list[str], predicted: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": round(accuracy_score(gold, predicted), 4),
            "macro_f1": round(f1_score(gold, predicted, average="macro"), 4)}


def run(limit: int | None, encoder: str | None, epochs: int, max_length: int) -> dict:
    from core.options import TrainConfig
    from ml.inference import Predictor
    from ml.loop import train_classifier
    from ml.mc_serving import ChoicePredictor

    with open(DATA, newline="", encoding="utf-8") as f:
        tweets = list(csv.DictReader(f))
    if limit:
        tweets = tweets[:limit]
    rows = topic_rows(tweets)
    train_idx, test_idx = held_out_split(rows)
    train, test = [rows[i] for i in train_idx], [rows[i] for i in test_idx]
    common = {"epochs": epochs, "max_length": max_length, **({"encoder": encoder} if encoder else {})}
    out: dict = {"rows": {"train": len(train), "test": len(test)}, "epochs": epochs, "max_length": max_length}
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(task_type="multiple-choice", choices_column="choices", **common)
        started = time.monotonic()
        result = train_classifier(train, config, Path(scratch) / "mc")
        seconds = time.monotonic() - started
        answers = ChoicePredictor.load(Path(scratch) / "mc").predict(
            [{"context": r["context"], "question": r["question"], "choices": json.loads(r["choices"])} for r in test])
        picked = [TOPIC_NAMES[a["choice"]] for a in answers]
        out["multiple_choice"] = {**_scores([r["topic"] for r in test], picked), "train_seconds": round(seconds, 1),
                                  "validation_accuracy": result.metrics["accuracy"]}

        config = TrainConfig(text_column="context", label_column="topic", **common)
        started = time.monotonic()
        train_classifier(train, config, Path(scratch) / "text")
        seconds = time.monotonic() - started
        labels = [p["label"] for p in Predictor.load(Path(scratch) / "text").predict([r["context"] for r in test])]
        out["text_classification"] = {**_scores([r["topic"] for r in test], labels), "train_seconds": round(seconds, 1)}
    return out


TOPIC_NAMES = {phrase: topic for topic, phrase in TOPIC_PHRASES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="only the first N tweets (a quick run)")
    parser.add_argument("--encoder", help="encoder path (default: the packaged MiniLM)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = run(args.limit, args.encoder, args.epochs, args.max_length)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
