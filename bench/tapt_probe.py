"""Probe: does task-adaptive pretraining (TAPT) of the encoder help the default model on held-out tweets?

    .venv/bin/python bench/tapt_probe.py [--mlm-epochs 1] [--set key=value ...] [--json out.json]

Gururangan et al. (2020, "Don't Stop Pretraining") continue masked-language-model training of the encoder on the
task's own unlabeled texts before fine-tuning. Here: the packaged all-MiniLM-L6-v2 gets a fresh MLM head (the
sentence-transformers checkpoint ships none; the decoder is tied to the word embeddings), is trained with 15%
masking on the *training* tweets of ``bench/training_quality.py``'s split (never the held-out ones), and the
adapted encoder (pooler weights carried over from the original) is then fine-tuned with the platform's defaults
and judged on the same 6,704 held-out tweets. It prints the MLM minutes, the fine-tuning minutes and the held-out
accuracy / macro-F1, so the whole cost (both phases) can be compared with the 30-minute budget of issue 8.

This is an experiment, not a platform feature: if it pays, the next step is a ``tapt_epochs`` training option.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import training_quality as tq  # noqa: E402  (the same split, reference and judging)


def adapt_encoder(texts: list[str], out_dir: Path, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """MLM-train the packaged encoder on ``texts``; save it (BertModel + pooler + tokenizer) to ``out_dir``.
    Returns the seconds it took."""
    import torch
    from transformers import (AutoTokenizer, BertForMaskedLM, BertModel, DataCollatorForLanguageModeling,
                              get_linear_schedule_with_warmup)

    from ml.device import configure_torch_threads
    from models.encoders import default_encoder_path

    configure_torch_threads()
    started = time.monotonic()
    torch.manual_seed(seed)
    source = default_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    mlm = BertForMaskedLM.from_pretrained(source)  # cls.predictions.transform: fresh; decoder tied to embeddings
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    encoded = tokenizer(texts, truncation=True, max_length=128)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]  # length-sorted: little padding
    steps = epochs * len(batches)
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, round(0.06 * steps), steps)
    rng = random.Random(seed)
    mlm.train()
    step = 0
    for epoch in range(epochs):
        rng.shuffle(batches)
        for batch in batches:
            inputs = collator([{"input_ids": encoded[i]} for i in batch])
            loss = mlm(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(mlm.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % 100 == 0 or step == steps:
                print(f"  [mlm] epoch {epoch + 1} step {step}/{steps} loss {float(loss):.3f} "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
    encoder = BertModel.from_pretrained(source)  # with its pooler, which MLM training does not touch
    missing, unexpected = encoder.load_state_dict(mlm.bert.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("pooler.") for name in missing), (missing, unexpected)
    encoder.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlm-epochs", type=int, default=1)
    parser.add_argument("--mlm-batch-size", type=int, default=32)
    parser.add_argument("--mlm-lr", type=float, default=1e-4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir", type=Path, default=tq.DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench" / "encoders")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training rows (smoke runs)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    path = args.data_dir / "tweets_sentiment.csv"
    if not path.exists():
        print(f"no data at {path}: this probe needs ../shared/datasets", file=sys.stderr)
        return 2
    rows = tq.read_csv(path)
    train_idx, test_idx = tq.held_out_split(rows)
    train, test = [rows[i] for i in train_idx[: args.limit]], [rows[i] for i in test_idx]
    overrides = {k: tq.parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    with tempfile.TemporaryDirectory() as scratch:
        encoder_dir = Path(scratch) / "encoder"
        mlm_seconds = adapt_encoder([r["text"] for r in train], encoder_dir, args.mlm_epochs, args.mlm_batch_size,
                                    args.mlm_lr, seed=42)
        print(f"MLM adaptation: {mlm_seconds / 60:.1f} min", flush=True)
        result = tq.run_family("bert", train, test, {**overrides, "encoder": str(encoder_dir)}, args.cache_dir,
                               trace=args.trace)
    result["mlm_seconds"] = round(mlm_seconds, 1)
    result["mlm"] = {"epochs": args.mlm_epochs, "batch_size": args.mlm_batch_size, "lr": args.mlm_lr}
    total = (mlm_seconds + result["train_seconds"]) / 60
    print(json.dumps({k: v for k, v in result.items() if k not in ("history", "trace")}), flush=True)
    print(f"\nTAPT + fine-tuning: {total:.1f} min in all; held-out accuracy {result['held_out_accuracy']:.4f}, "
          f"macro-F1 {result['held_out_macro_f1']:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
