"""Peak memory (RSS) of one training step at the largest accepted settings (issue 16, item 5).

One logical step of ``--rows`` rows x ``--max-length`` tokens (every row full length: the worst case) on the
packaged default encoder (all-MiniLM-L6-v2, family ``bert``) on CPU, through ``ml.loop.train_step`` under
``--budget`` padded tokens per micro-batch (MAX_TRAIN_BATCH_TOKENS), then the AdamW step. Each configuration runs
in a fresh child process, so its ``ru_maxrss`` is its own. Memory does not grow with the number of micro-batches
(each one's activations are freed by its backward; gradients accumulate in place), so ``--rows 64`` measures the
same peak as ``--rows 1024`` in a sixteenth of the time.

    .venv/bin/python bench/train_step_memory.py --rows 1024 --budget 8192
    .venv/bin/python bench/train_step_memory.py --rows 64 --budget 2048 8192 16384
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mib() -> float:
    """This process's peak RSS so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_step(rows: int, max_length: int, budget: int, threads: int | None) -> dict:
    """Build the model, run one logical step, report peak RSS before and after."""
    import random

    import torch

    from ml import loop
    from ml.batches import Encoded
    from models.registry import build_model, resolve_encoder

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("bert", {"label": ["a", "b", "c"]}, resolve_encoder("bert", None, None))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    rng = random.Random(0)
    ids = [[101] + [rng.randint(1000, 29000) for _ in range(max_length - 2)] + [102] for _ in range(rows)]
    data = Encoded(ids, {"label": [i % 3 for i in range(rows)]}, 0)
    before = _rss_mib()
    started = time.monotonic()
    loss = loop.train_step(model, data, list(range(rows)), "cpu", budget)
    torch.nn.utils.clip_grad_norm_(model.parameters(), loop.MAX_GRAD_NORM)
    optimizer.step()
    return {"rows": rows, "max_length": max_length, "budget": budget,
            "micro_batches": len(loop.micro_batches(data, list(range(rows)), budget)),
            "rss_before_step_mib": round(before), "peak_rss_mib": round(_rss_mib()),
            "step_seconds": round(time.monotonic() - started, 1), "loss": round(loss, 4),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024, help="logical batch_size (default: the largest accepted)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--budget", type=int, nargs="+", default=[8192], help="MAX_TRAIN_BATCH_TOKENS values")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_step(args.rows, args.max_length, args.budget[0], args.threads)))
        return
    for budget in args.budget:
        command = [sys.executable, __file__, "--child", "--rows", str(args.rows), "--max-length",
                   str(args.max_length), "--budget", str(budget)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        out = subprocess.run(command, capture_output=True, text=True)
        print(out.stdout.strip() or f"budget {budget}: exit {out.returncode}: {out.stderr.strip()[-500:]}",
              flush=True)


if __name__ == "__main__":
    main()
