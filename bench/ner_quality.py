"""Benchmark: the platform's DEFAULT token-classification settings against a plain transformers recipe (WNUT-17).

    .venv/bin/python bench/ner_quality.py --json bench/results/ner_quality.json
    .venv/bin/python bench/ner_quality.py --skip-plain --set learning_rate=3e-4   # try other platform settings
    .venv/bin/python bench/ner_quality.py --plain-only

Both train on ``../shared/datasets/ner/wnut17_train.conll`` (3,394 sentences) with the default encoder
(all-MiniLM-L6-v2) and are judged on ``wnut17_dev.conll`` (1,009 sentences), which neither trains on: entity F1
(seqeval's default: CoNLL-style spans, micro over the six types).

* platform: the CoNLL file read as an upload is (``core.datasets.read_rows``), a ``core.options.TrainRequest`` built
  as the API builds it from ``{"task_type": "token-classification", "tokens_column", "tags_column"}`` (plus any
  ``--set``), trained by ``ml.loop.train_classifier`` (what the worker calls; it holds out its own validation split
  for the best checkpoint); the dev sentences are tagged by the saved model's ``ml.token_serving.TokenPredictor``.
* plain recipe: ``AutoModelForTokenClassification`` from the same MiniLM weights, labels on each word's first
  sub-token (-100 elsewhere), AdamW lr 5e-5, batch 16, 3 epochs, linear warm-up over 10% then linear decay, max
  length 128; a dev word takes its first sub-token's argmax (a word cut off by the 128 tokens is ``O``).

Wall time is the whole training call (tokenizing, training, the platform's evaluations and saving), not prediction.
The goal (issue 17): platform defaults >= plain + 2 F1 points, in no more wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = REPO / ".." / "shared" / "datasets" / "ner"
TRAIN, DEV = DATA_DIR / "wnut17_train.conll", DATA_DIR / "wnut17_dev.conll"
SEED = 42
PLAIN = {"learning_rate": 5e-5, "batch_size": 16, "epochs": 3, "warmup_ratio": 0.1, "max_length": 128}
GOAL_POINTS = 2.0


def read_conll(path: Path) -> list[dict]:
    """The file as an upload's rows (``{"tokens": JSON, "tags": JSON}`` per sentence), read by ``core.datasets``."""
    from core.datasets import read_rows

    return read_rows(path.read_bytes(), "conll").rows


def sentences(rows: list[dict]) -> tuple[list[list[str]], list[list[str]]]:
    return [json.loads(r["tokens"]) for r in rows], [json.loads(r["tags"]) for r in rows]


def entity_f1(truth: list[list[str]], predicted: list[list[str]]) -> dict:
    """seqeval's defaults: entity spans (CoNLL rules), micro-averaged."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {"f1": round(float(f1_score(truth, predicted)), 4),
            "precision": round(float(precision_score(truth, predicted)), 4),
            "recall": round(float(recall_score(truth, predicted)), 4)}


def parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------------------------ the platform


def run_platform(train_rows: list[dict], dev_rows: list[dict], overrides: dict, cache_dir: Path) -> dict:
    """Train with the platform defaults (+ ``overrides``) through ``ml.loop.train_classifier``; F1 on dev."""
    from core.options import TrainRequest
    from ml.loop import train_classifier
    from ml.token_serving import TokenPredictor

    request = TrainRequest.model_validate({"dataset_id": 1, "task_type": "token-classification",
                                           "tokens_column": "tokens", "tags_column": "tags", **overrides})
    config = request.config()
    words, truth = sentences(dev_rows)
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        result = train_classifier(train_rows, config, Path(out) / "model", encoder_cache_dir=cache_dir,
                                  progress=_printer("platform"))
        seconds = time.monotonic() - started
        predictor = TokenPredictor.load(Path(out) / "model")
        predicted_started = time.monotonic()
        predicted = [r["tags"] for r in predictor.engine.predict(words)]
        predict_seconds = time.monotonic() - predicted_started
    metrics = result.metrics
    shown = ("family", "epochs", "batch_size", "learning_rate", "head_lr", "warmup_ratio", "max_length",
             "validation_split", "class_weights", "weight_decay")
    return {"run": "platform", "train_seconds": round(seconds, 1), "predict_seconds": round(predict_seconds, 1),
            **entity_f1(truth, predicted),
            "validation_f1": metrics.get("f1"), "best_step": metrics.get("best_step"),
            "history": metrics.get("history"),
            "overrides": overrides,
            "settings": {k: v for k, v in config.model_dump().items() if k in shown or k in overrides}}


def _printer(name: str):
    last = [0.0]

    def progress(fraction: float, info: dict) -> None:
        now = time.monotonic()
        if now - last[0] >= 60 or info.get("phase") in ("epoch_end", "done") or "history" in info:
            last[0] = now
            shown = {k: info[k] for k in ("phase", "epoch", "step", "total_steps", "train_loss", "f1",
                                          "eta_seconds") if k in info}
            print(f"  [{name}] {fraction:6.1%} {shown}", flush=True)

    return progress


# ------------------------------------------------------------------------------------------------ the plain recipe


def _first_subtoken_labels(encoding, tags: list[str], label2id: dict[str, int]) -> list[int]:
    labels, previous = [], None
    for word in encoding.word_ids():
        labels.append(-100 if word is None or word == previous else label2id[tags[word]])
        previous = word
    return labels


def run_plain(train_rows: list[dict], dev_rows: list[dict]) -> dict:
    """The transformers recipe of the module docstring, as a user would write it by hand."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from models.encoders import default_encoder_path

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    words, tags = sentences(train_rows)
    labels = sorted({t for s in tags for t in s})
    label2id = {t: i for i, t in enumerate(labels)}
    path = default_encoder_path()

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    examples = []
    for w, t in zip(words, tags):
        enc = tokenizer(w, is_split_into_words=True, truncation=True, max_length=PLAIN["max_length"])
        examples.append((enc["input_ids"], _first_subtoken_labels(enc, t, label2id)))
    steps_per_epoch = -(-len(examples) // PLAIN["batch_size"])
    total = steps_per_epoch * PLAIN["epochs"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=PLAIN["learning_rate"])
    schedule = get_linear_schedule_with_warmup(optimizer, int(PLAIN["warmup_ratio"] * total), total)
    model.train()
    step = 0
    for epoch in range(PLAIN["epochs"]):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for b in range(0, len(order), PLAIN["batch_size"]):
            batch = [examples[i] for i in order[b:b + PLAIN["batch_size"]]]
            longest = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), longest), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)  # (B, T)
            target = torch.full((len(batch), longest), -100, dtype=torch.long)  # (B, T)
            for r, (row_ids, row_labels) in enumerate(batch):
                ids[r, :len(row_ids)] = torch.tensor(row_ids)
                mask[r, :len(row_ids)] = 1
                target[r, :len(row_ids)] = torch.tensor(row_labels)
            loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 100 == 0:
                print(f"  [plain] step {step}/{total} epoch {epoch + 1} loss {loss.item():.4f} "
                      f"{time.monotonic() - started:.0f}s", flush=True)
    seconds = time.monotonic() - started

    model.eval()
    dev_words, truth = sentences(dev_rows)
    predicted = []
    predict_started = time.monotonic()
    with torch.inference_mode():
        for w in dev_words:
            enc = tokenizer(w, is_split_into_words=True, truncation=True, max_length=PLAIN["max_length"],
                            return_tensors="pt")
            best = model(**enc).logits[0].argmax(-1).tolist()  # (T,)
            out, previous = ["O"] * len(w), None
            for position, word in enumerate(enc.word_ids()):
                if word is not None and word != previous:
                    out[word] = labels[best[position]]
                previous = word
            predicted.append(out)
    return {"run": "plain transformers", "train_seconds": round(seconds, 1),
            "predict_seconds": round(time.monotonic() - predict_started, 1), **entity_f1(truth, predicted),
            "settings": dict(PLAIN)}


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a platform training option other than the default (repeatable)")
    parser.add_argument("--skip-plain", action="store_true", help="only the platform run")
    parser.add_argument("--plain-only", action="store_true", help="only the plain transformers recipe")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--limit", type=int, help="smoke test: only the first N sentences of each file")
    parser.add_argument("--train-sentences", type=int,
                        help="train both on the first N training sentences only (a shorter run; dev stays whole)")
    args = parser.parse_args()
    if not TRAIN.exists() or not DEV.exists():
        print(f"skipped: the WNUT-17 files are not in {DATA_DIR.resolve()} (../shared/datasets/ner)")
        return
    import torch

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_value(value)
    train_rows, dev_rows = read_conll(TRAIN)[:args.limit], read_conll(DEV)[:args.limit]
    train_rows = train_rows[:args.train_sentences]
    print(f"WNUT-17: {len(train_rows)} training sentences, {len(dev_rows)} dev sentences; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as cache:
        if not args.skip_plain:
            runs.append(run_plain(train_rows, dev_rows))
            print(f"  plain: {runs[-1]}", flush=True)
        if not args.plain_only:
            runs.append(run_platform(train_rows, dev_rows, overrides, Path(cache)))
            print(f"  platform: { {k: v for k, v in runs[-1].items() if k != 'history'} }", flush=True)

    print("\n| run | settings | dev entity F1 | precision | recall | train wall time (s) |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['run']} | {json.dumps(run['settings'])} | {run['f1']:.4f} | {run['precision']:.4f} | "
              f"{run['recall']:.4f} | {run['train_seconds']:.0f} |")
    if len(runs) == 2:
        plain, ours = runs
        points = 100 * (ours["f1"] - plain["f1"])
        ratio = ours["train_seconds"] / plain["train_seconds"]
        ok = points >= GOAL_POINTS and ratio <= 1.0
        print(f"\nplatform - plain: {points:+.1f} F1 points (goal >= +{GOAL_POINTS:.0f}); wall time ratio "
              f"{ratio:.2f}x (goal <= 1.00x): {'MET' if ok else 'NOT MET'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                         "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
                                         "train_sentences": len(train_rows), "dev_sentences": len(dev_rows),
                                         "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
