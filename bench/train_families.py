"""Benchmark: train every model family for one epoch on the tweet corpora and report speed and quality.

    .venv/bin/python bench/train_families.py                  # full run (33.5k rows per family; slow on CPU)
    .venv/bin/python bench/train_families.py --limit 2000     # quick run on a seeded random subsample

Single-task families train on ``../shared/datasets/tweets_sentiment.csv`` (label ``sentiment``); ``multitask`` on
``tweets_multitask.csv`` (tasks ``sentiment`` + ``topic``). Every family uses its default encoder (the packaged
all-MiniLM-L6-v2; its exact DistilBERT conversion for ``distilbert``) and holds out 10% stratified for validation.
Prints a table of training wall time, training examples/s, validation accuracy and macro-F1 (per task for multitask)
and writes the raw metrics to ``--json`` when given.
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

FAMILIES = ("bert", "distilbert", "bert_lstm", "multitask")
DATA_DIR = REPO / ".." / "shared" / "datasets"


def read_rows(path: Path, limit: int | None, seed: int) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if limit and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="subsample N rows per dataset (seeded)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, default: all")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench" / "encoders",
                        help="where the converted DistilBERT encoder is cached")
    parser.add_argument("--json", type=Path, default=None, help="write all metrics here")
    args = parser.parse_args(argv)

    from ml.config import TrainConfig
    from ml.loop import train_classifier

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families: {', '.join(sorted(unknown))}")
    datasets = {
        "sentiment": args.data_dir / "tweets_sentiment.csv",
        "multitask": args.data_dir / "tweets_multitask.csv",
    }
    for path in datasets.values():
        if not path.is_file():
            parser.error(f"dataset not found: {path}")

    import torch

    print(f"# device={args.device} torch_threads={torch.get_num_threads()} limit={args.limit} "
          f"epochs={args.epochs} batch_size={args.batch_size} max_length={args.max_length}", flush=True)
    results = {}
    for family in families:
        multitask = family == "multitask"
        rows = read_rows(datasets["multitask" if multitask else "sentiment"], args.limit, args.seed)
        config = TrainConfig(
            text_column="text",
            label_columns=["sentiment", "topic"] if multitask else ["sentiment"],
            family=family,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_length=args.max_length,
            validation_split=0.1,
            seed=args.seed,
        )
        last = [0.0]

        def progress(fraction: float, info: dict, family: str = family) -> None:
            if time.monotonic() - last[0] > 15 or info.get("phase") in ("epoch_end", "done"):
                last[0] = time.monotonic()
                print(f"  [{family}] {fraction:6.1%} {info}", file=sys.stderr, flush=True)

        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"bench-{family}-") as out:
            result = train_classifier(rows, config, Path(out), device=args.device,
                                      encoder_cache_dir=args.cache_dir, progress=progress)
        result.metrics["wall_seconds_incl_load_and_save"] = round(time.monotonic() - started, 2)
        results[family] = result.metrics

    header = (f"{'family':<12} {'task':<10} {'rows train/val':>15} {'train s':>9} {'ex/s':>8} "
              f"{'accuracy':>9} {'macro-F1':>9}")
    print(header)
    print("-" * len(header))
    for family, m in results.items():
        per_task = m["tasks"] if "tasks" in m else {"sentiment": m}
        for i, (task, tm) in enumerate(per_task.items()):
            lead = (f"{family:<12} {task:<10} {str(m['train_examples']) + '/' + str(m['validation_examples']):>15} "
                    f"{m['train_seconds']:>9.1f} {m['examples_per_second']:>8.1f}") if i == 0 else \
                f"{'':<12} {task:<10} {'':>15} {'':>9} {'':>8}"
            print(f"{lead} {tm['accuracy']:>9.4f} {tm['macro_f1']:>9.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
