"""Benchmark: multiple choice on real text -- the tweets' topic as a question with six choices (issue 18).

    .venv/bin/python bench/mc_topics.py --json bench/results/mc_topics.json          # full data (GPU advised)
    .venv/bin/python bench/mc_topics.py --size 300 --epochs 1 --only platform,serving  # a quick run

How the set is built (:func:`topic_rows`): each tweet of ``../shared/datasets/tweets_multitask.csv`` is a context, the
question is "What is this tweet about?", the choices are the six topics as short phrases (:data:`TOPIC_PHRASES`) in
an order shuffled per row (seeded by the row's number, so every run sees the same rows), and the label is the
position of the tweet's topic. The tweets are split once like ``bench/training_quality.py`` (20% held out, seed
1234, stratified on the topic). A ``multiple-choice`` model trains through ``ml.loop.train_classifier`` with
``epochs`` and ``max_length`` 128 given and the platform's defaults otherwise, and answers the held-out rows through
``ml.mc_serving.ChoicePredictor`` (the batching engine, as a classify job does); a ``text-classification`` model
trains on the same rows' (tweet, topic) and is judged the same way, and so is the plain transformers recipe
(:func:`plain_multiple_choice`). ``--size`` draws that many tweets with a fixed seed (six pairs a row: the full set
needs a GPU). Serving (:func:`serving`): the platform's path against the best raw forward on the held-out rows.
Printed: held-out accuracy and macro-F1 of each model, their training time, the serving ratio.
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


def subsample(tweets: list[dict[str, str]], size: int | None, seed: int = SPLIT_SEED) -> list[dict[str, str]]:
    """``size`` tweets drawn at random with a fixed seed (all of them when ``size`` is None), in file order: every
    model of a run sees the same rows, and so does every run with the same ``size``."""
    if not size or size >= len(tweets):
        return tweets
    return [tweets[i] for i in sorted(random.Random(seed).sample(range(len(tweets)), size))]


def as_inputs(rows: list[dict[str, str]]) -> list[dict]:
    """The classify inputs of ``rows``: ``{"context", "question", "choices"}``."""
    return [{"context": r["context"], "question": r["question"], "choices": json.loads(r["choices"])} for r in rows]


def platform_config(task: dict):
    """The training configuration the API builds from ``task`` (a train request's options, as JSON)."""
    from core.options import TrainRequest

    return TrainRequest.model_validate({"dataset_id": 1, **task}).config()


def plain_multiple_choice(train: list[dict], test: list[dict], encoder: str, epochs: int, max_length: int,
                          batch_size: int = 16, learning_rate: float = 5e-5, warmup: float = 0.1,
                          seed: int = SPLIT_SEED) -> dict:
    """The plain transformers recipe: ``AutoModelForMultipleChoice`` on ``encoder``, AdamW, linear warm-up then
    decay, pairs (tweet, question + choice) as the platform builds them, padded per batch; held-out predictions."""
    import torch
    from transformers import AutoModelForMultipleChoice, AutoTokenizer, get_linear_schedule_with_warmup

    from core.task_types.multiple_choice import Example
    from ml.mc_data import pair_texts

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModelForMultipleChoice.from_pretrained(encoder)

    def encode(rows: list[dict]) -> list[dict]:
        out = []
        for r in rows:
            pairs = pair_texts(Example(r["context"], r["question"], json.loads(r["choices"])))
            out.append(tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=max_length))
        return out

    def collate(encoded: list[dict]) -> dict:
        choices = len(encoded[0]["input_ids"])  # six for every row of this set
        flat = [{k: e[k][c] for k in e} for e in encoded for c in range(choices)]
        batch = tokenizer.pad(flat, return_tensors="pt")  # (B * C, T)
        return {k: v.view(len(encoded), choices, -1) for k, v in batch.items()}  # (B, C, T)

    started = time.monotonic()
    train_encoded, labels = encode(train), torch.tensor([int(r["label"]) for r in train])
    steps = epochs * -(-len(train) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(warmup * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            loss = model(**collate([train_encoded[i] for i in rows]), labels=labels[rows]).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    seconds = time.monotonic() - started
    model.eval()
    test_encoded, picked = encode(test), []
    with torch.inference_mode():
        for start in range(0, len(test), 64):
            logits = model(**collate(test_encoded[start:start + 64])).logits  # (B, C)
            picked.extend(logits.argmax(dim=-1).tolist())
    return {"picked": picked, "train_seconds": seconds}


def raw_serving(model, tokenizer, inputs: list[dict], max_length: int, batch_size: int) -> list[dict]:
    """The best raw forward over ``inputs``: every pair tokenized once, sorted by token count, fixed batches of
    ``batch_size`` pairs through the model as one-choice questions, then the same post-processing as the platform
    (each input's logits regrouped, softmax across its choices, :func:`result_of`)."""
    import torch

    from core.task_types.multiple_choice import Example, result_of
    from ml.mc_data import pair_texts

    pairs = [pair for item in inputs for pair in pair_texts(Example(item["context"], item["question"], item["choices"]))]
    encoded = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first",
                        max_length=max_length, return_attention_mask=False)
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    logits = [0.0] * len(ids)
    pad = tokenizer.pad_token_id or 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = len(ids[batch[0]])
            input_ids = torch.full((len(batch), 1, width), pad, dtype=torch.long)  # (N, 1, T)
            mask = torch.zeros((len(batch), 1, width), dtype=torch.long)  # (N, 1, T)
            token_types = torch.zeros((len(batch), 1, width), dtype=torch.long)  # (N, 1, T)
            for b, i in enumerate(batch):
                input_ids[b, 0, :len(ids[i])] = torch.tensor(ids[i])
                mask[b, 0, :len(ids[i])] = 1
                token_types[b, 0, :len(ids[i])] = torch.tensor(types[i])
            out = model(input_ids, mask, token_type_ids=token_types).logits[:, 0].tolist()  # (N,)
            for i, value in zip(batch, out):
                logits[i] = value
    results, start = [], 0
    for item in inputs:
        count = len(item["choices"])
        probabilities = torch.softmax(torch.tensor(logits[start:start + count], dtype=torch.float64), dim=0)
        results.append(result_of(item["choices"], probabilities.tolist()))
        start += count
    return results


def serving(model_dir: Path, inputs: list[dict], repeats: int) -> dict:
    """Seconds of the platform's serving path (``ChoicePredictor.predict``: encode, the batching engine, results)
    and of :func:`raw_serving` on the same model, alternated ``repeats`` times (best of each), same batch size
    (the engine's ``max_batch_size``; its token budget never cuts a batch of these short pairs), same answers."""
    from ml.batching import EngineOptions
    from ml.mc_serving import ChoicePredictor

    predictor = ChoicePredictor.load(model_dir)
    batch_size = EngineOptions().max_batch_size
    predictor.predict(inputs[:8]), raw_serving(predictor.model, predictor.tokenizer, inputs[:8], 128, batch_size)
    platform, raw = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        ours = predictor.predict(inputs)
        platform.append(time.perf_counter() - started)
        started = time.perf_counter()
        theirs = raw_serving(predictor.model, predictor.tokenizer, inputs, predictor.max_length, batch_size)
        raw.append(time.perf_counter() - started)
    agree = sum(a["choice_index"] == b["choice_index"] for a, b in zip(ours, theirs)) / len(inputs)
    return {"inputs": len(inputs), "pairs": sum(len(i["choices"]) for i in inputs), "batch_size": batch_size,
            "platform_seconds": [round(s, 3) for s in platform], "raw_seconds": [round(s, 3) for s in raw],
            "speed_vs_raw": round(min(raw) / min(platform), 3), "same_choice": round(agree, 4)}


def run(size: int | None, encoder: str | None, epochs: int, max_length: int, repeats: int = 3,
        only: set[str] | None = None, platform_options: dict | None = None) -> dict:
    """Train and judge every model on ``size`` subsampled tweets (see the module docstring); the results."""
    import torch

    from core.encoder_policy import packaged_encoder_dir
    from ml.inference import Predictor
    from ml.loop import train_classifier
    from ml.mc_serving import ChoicePredictor

    with open(DATA, newline="", encoding="utf-8") as f:
        tweets = subsample(list(csv.DictReader(f)), size)
    rows = topic_rows(tweets)
    train_idx, test_idx = held_out_split(rows)
    train, test = [rows[i] for i in train_idx], [rows[i] for i in test_idx]
    gold = [r["topic"] for r in test]
    common = {"epochs": epochs, "max_length": max_length, **({"encoder": encoder} if encoder else {})}
    out: dict = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "tweets": len(tweets),
                 "rows": {"train": len(train), "test": len(test)}, "epochs": epochs, "max_length": max_length,
                 "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    only = only or {"platform", "plain", "text", "serving"}
    with tempfile.TemporaryDirectory() as scratch:
        if "platform" in only:
            config = platform_config({"task_type": "multiple-choice", "choices_column": "choices", **common,
                                      **(platform_options or {})})
            started = time.monotonic()
            result = train_classifier(train, config, Path(scratch) / "mc")
            seconds = time.monotonic() - started
            answers = ChoicePredictor.load(Path(scratch) / "mc").predict(as_inputs(test))
            picked = [TOPIC_NAMES[a["choice"]] for a in answers]
            out["multiple_choice"] = {**_scores(gold, picked), "train_seconds": round(seconds, 1),
                                      "validation_accuracy": result.metrics.get("accuracy")}
            print(json.dumps({"multiple_choice": out["multiple_choice"]}), flush=True)
        if "plain" in only:
            plain = plain_multiple_choice(train, test, encoder or str(packaged_encoder_dir()), epochs, max_length)
            picked = [TOPIC_NAMES[json.loads(r["choices"])[i]] for r, i in zip(test, plain["picked"])]
            out["plain_transformers"] = {**_scores(gold, picked), "train_seconds": round(plain["train_seconds"], 1)}
            print(json.dumps({"plain_transformers": out["plain_transformers"]}), flush=True)
        if "text" in only:
            config = platform_config({"text_column": "context", "label_column": "topic", **common})
            started = time.monotonic()
            train_classifier(train, config, Path(scratch) / "text")
            seconds = time.monotonic() - started
            labels = [p["label"] for p in Predictor.load(Path(scratch) / "text").predict([r["context"] for r in test])]
            out["text_classification"] = {**_scores(gold, labels), "train_seconds": round(seconds, 1)}
            print(json.dumps({"text_classification": out["text_classification"]}), flush=True)
        if "serving" in only and "platform" in only:
            out["serving"] = serving(Path(scratch) / "mc", as_inputs(test), repeats)
            print(json.dumps({"serving": out["serving"]}), flush=True)
    return out


TOPIC_NAMES = {phrase: topic for topic, phrase in TOPIC_PHRASES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, help="N tweets drawn at random with a fixed seed (default: all)")
    parser.add_argument("--only", help="comma-separated parts: platform, plain, text, serving (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="serving: timed runs of each side (best kept)")
    parser.add_argument("--encoder", help="encoder path (default: the packaged MiniLM)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--platform-options", type=json.loads, default={},
                        help='more train-request options for the platform run, as JSON (e.g. \'{"batch_size": 16}\')')
    args = parser.parse_args(argv)
    results = run(args.size, args.encoder, args.epochs, args.max_length, args.repeats,
                  set(args.only.split(",")) if args.only else None, args.platform_options)
    results["platform_options"] = args.platform_options
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
