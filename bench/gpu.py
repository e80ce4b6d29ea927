"""GPU benchmark: mixed-precision training, serving throughput against the raw forward, /predict under 64 clients.

One command on a machine with a CUDA GPU (``.venv/bin/python bench/gpu.py --json bench/results/gpu.json``); it
exits with a clear message where there is none (``--device cpu`` runs the same steps on the CPU as a smoke test,
``--dry-run`` only checks the set-up and prints the plan). On tweets of ``../shared/datasets/tweets_sentiment.csv``:

T   training, the same model (``--family``, the default encoder) on the same rows with the same seed, ``AMP=off``
    (fp32) against ``AMP=auto`` (bf16, or fp16 with loss scaling): training examples/s and the accuracy on the same
    held-out rows (``ml.loop.train_classifier`` in this process);
S   serving texts/s in this process: the platform's backend and batching engine (``ml.batching``, the GPU's batch
    limits) against the raw forward at the same batch size (texts tokenized once, sorted by token count, fp16/bf16
    autocast, softmax back on the host);
J   one classify job of ``--texts`` texts through the whole stack (REST -> Redis -> GPU worker -> SQL), texts/s;
P   ``POST /api/v1/predict`` with one tweet from ``--clients`` (64) concurrent clients: p50, p99, requests/s.

J and P start the stack the way ``bench/serving.py`` does (``make run``'s processes, ``DEVICE`` set to the device)
and train their model through the API on the GPU worker. ``--skip-stack`` leaves them out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.serving import (DATASET, Api, Stack, load_rows, p1_platform, p3_latencies,  # noqa: E402
                           percentile, to_csv)


def pick_device(requested: str) -> str:
    """``cuda`` when there is a GPU; ``--device cpu`` only when asked; else exit with the reason."""
    import torch

    if requested == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU and torch sees none on this machine "
                         "(use --device cpu for a CPU smoke run of the same steps)")
    return "cuda"


def gpu_line(device: str) -> dict:
    import torch

    from ml.precision import native_bf16

    if device == "cpu":
        return {"device": "cpu", "torch": torch.__version__}
    return {"device": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
            "bf16": native_bf16("cuda"), "torch": torch.__version__, "cuda": torch.version.cuda,
            "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}


# ------------------------------------------------------------------------------------------------ T: training


def train_both(train_rows: list[dict], held_out: list[dict], device: str, args, work: Path) -> dict:
    """The same training with AMP off and auto (keys ``off`` / ``auto``): examples/s (steps only), wall seconds,
    held-out accuracy."""
    from ml.config import TrainConfig
    from ml.loop import train_classifier

    config = TrainConfig(text_column="text", label_columns=["sentiment"], family=args.family, epochs=args.epochs,
                         batch_size=args.batch_size, learning_rate=args.learning_rate, max_length=args.max_length,
                         seed=args.seed)
    out = {}
    # a short run of each first: CUDA's context, the cuBLAS handles and each precision's kernels (loaded lazily)
    # would otherwise be charged to whichever run comes first, fp32's
    for amp in ("off", "auto"):
        train_classifier(train_rows[:256], config.model_copy(update={"epochs": 1}), work / f"warm-up-{amp}",
                         validation_rows=held_out[:64], device=device, amp=amp, encoder_cache_dir=work / "encoders")
    for amp in ("off", "auto"):
        started = time.perf_counter()
        result = train_classifier(train_rows, config, work / f"train-{amp}", validation_rows=held_out,
                                  device=device, amp=amp, encoder_cache_dir=work / "encoders")
        metrics = result.metrics
        out[amp] = {
            "amp": metrics["amp"], "examples_per_second": metrics["examples_per_second"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": round(time.perf_counter() - started, 2),
            "held_out_accuracy": metrics["accuracy"], "held_out_macro_f1": metrics["macro_f1"],
            "model_dir": str(result.output_dir)}
        print(f"T {amp:>4}: {metrics['amp']} {metrics['examples_per_second']} examples/s, held-out accuracy "
              f"{metrics['accuracy']:.3f} (macro-F1 {metrics['macro_f1']:.3f})", flush=True)
    return out


# ------------------------------------------------------------------------------------------------ S: serving


def raw_forward(predictor, texts: list[str], batch_size: int) -> float:
    """Seconds for the best raw configuration: tokenize once, sort by token count, fixed batches of
    ``batch_size``, the same autocast as serving, probabilities back on the host."""
    import torch

    from ml.precision import inference_autocast

    started = time.perf_counter()
    ids = predictor.tokenizer(texts, truncation=True, max_length=predictor.max_length)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    with torch.inference_mode(), inference_autocast(predictor.device):
        for start in range(0, len(order), batch_size):
            batch = [ids[i] for i in order[start:start + batch_size]]
            input_ids = torch.full((len(batch), len(batch[0])), predictor.pad_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros_like(input_ids)  # (B, T)
            for b, row in enumerate(batch):
                input_ids[b, :len(row)] = torch.tensor(row)
                mask[b, :len(row)] = 1
            logits = predictor.model(input_ids.to(predictor.device), mask.to(predictor.device)).logits  # (B, C)
            torch.softmax(logits.float(), dim=-1).cpu().tolist()
    return time.perf_counter() - started


def serve_both(model_dir: str, texts: list[str], device: str, runs: int) -> dict:
    """Texts/s of the platform's engine and of the raw forward, the same batch size, best of ``runs``."""
    from ml.batching import BatchingEngine, EngineOptions
    from ml.inference import Predictor

    predictor = Predictor.load(model_dir, device=device)
    options = EngineOptions.for_device(device, wait_ms=2.0)
    engine = BatchingEngine.with_options(predictor, options)
    engine.predict(texts[:256])  # warm-up: CUDA kernels, allocator
    raw_forward(predictor, texts[:256], options.max_batch_size)
    platform_s, raw_s = [], []
    for _ in range(runs):
        started = time.perf_counter()
        engine.predict(texts)
        platform_s.append(time.perf_counter() - started)
        raw_s.append(raw_forward(predictor, texts, options.max_batch_size))
    out = {"texts": len(texts), "batch_size": options.max_batch_size, "max_batch_tokens": options.max_batch_tokens,
           "platform_texts_per_s": round(len(texts) / min(platform_s), 1),
           "raw_texts_per_s": round(len(texts) / min(raw_s), 1)}
    out["platform_over_raw"] = round(out["platform_texts_per_s"] / out["raw_texts_per_s"], 3)
    print(f"S: engine {out['platform_texts_per_s']}/s vs raw {out['raw_texts_per_s']}/s at batch "
          f"{out['batch_size']} ({out['platform_over_raw']}x)", flush=True)
    return out


# ------------------------------------------------------------------------------------------------ J, P: the stack


def through_stack(train_rows: list[dict], texts: list[str], device: str, args, work: Path) -> dict:
    os.environ["DEVICE"] = device
    # 64 clients waiting at once: enough web threads and waiting slots that none is answered 202
    os.environ.setdefault("PREDICT_MAX_WAITERS", str(max(12, args.clients // 2 + 8)))
    stack = Stack(work / "stack", args.classify_threads, max(16, args.clients // 2 + 12))
    (work / "stack").mkdir()
    out: dict = {}
    try:
        stack.start()
        api = Api(f"http://127.0.0.1:{stack.port}")
        dataset_id = api.upload(to_csv(train_rows, ["text", "sentiment"]), "bench-gpu-train")
        job = api.wait(api.call("POST", "/api/v1/jobs/train", {
            "dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "family": args.family,
            "epochs": 1, "max_length": args.max_length, "batch_size": args.batch_size})["id"])
        if job["status"] != "succeeded":
            raise SystemExit(f"training through the stack failed: {job['error']}")
        out["worker_training"] = {k: job["metrics"].get(k) for k in ("device", "amp", "examples_per_second",
                                                                      "accuracy")}
        model_id = job["model_id"]
        p1_platform(api, model_id, texts[:64], False)  # load the model into the worker (not timed)
        rates = [len(texts) / p1_platform(api, model_id, texts, False) for _ in range(args.runs)]
        out["J_classify_job_texts_per_s"] = round(max(rates), 1)
        print(f"J: one classify job of {len(texts)} texts: {out['J_classify_job_texts_per_s']}/s", flush=True)
        started = time.perf_counter()
        latencies, deferred = p3_latencies(api, model_id, texts, args.clients, args.calls)
        seconds = time.perf_counter() - started
        out["P_predict"] = {"clients": args.clients, "calls": len(latencies), "p50_ms": round(percentile(latencies, 50),
                            1), "p99_ms": round(percentile(latencies, 99), 1),
                            "requests_per_s": round(len(latencies) / seconds, 1), "answered_202": deferred}
        print(f"P: /predict x {args.clients} clients: p50 {out['P_predict']['p50_ms']} ms, p99 "
              f"{out['P_predict']['p99_ms']} ms, {out['P_predict']['requests_per_s']} requests/s", flush=True)
        ready = api.call("GET", "/readyz")
        out["readyz_workers"] = ready.get("workers")
    finally:
        stack.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="check the set-up, print the plan, run nothing")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--family", default="bert")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--texts", type=int, default=4000, help="texts for S and J")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--calls", type=int, default=20, help="/predict calls per client")
    parser.add_argument("--classify-threads", type=int, default=64)
    parser.add_argument("--skip-stack", action="store_true", help="leave out J and P")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not DATASET.exists():
        print(f"needs {DATASET}", file=sys.stderr)
        return 2
    rows = load_rows(args.seed)
    need = args.train_rows + args.held_out + args.texts
    if len(rows) < args.train_rows + args.held_out + 1:
        print(f"{DATASET} has {len(rows)} rows; fewer than --train-rows + --held-out", file=sys.stderr)
        return 2
    train_rows = rows[:args.train_rows]
    held_out = rows[args.train_rows:args.train_rows + args.held_out]
    rest = rows[args.train_rows + args.held_out:] or held_out
    texts = [rest[i % len(rest)]["text"] for i in range(args.texts)]
    plan = (f"T train {args.family} on {len(train_rows)} tweets x {args.epochs} epochs, fp32 vs AMP, held-out "
            f"{len(held_out)}; S {len(texts)} texts engine vs raw; "
            + ("no stack" if args.skip_stack else f"J one job of {len(texts)} texts; P /predict x {args.clients} "
               f"clients x {args.calls} calls"))
    if args.dry_run:
        print(f"dry run: {len(rows)} rows ({need} wanted, reused cyclically for S/J). Plan: {plan}")
        return 0
    device = pick_device(args.device)
    print(f"{plan} on {device}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bertqueue-bench-gpu-"))
    results: dict = {"config": {**vars(args), "json": str(args.json), "cpus": os.cpu_count(),
                                "python": platform.python_version()}, "machine": gpu_line(device)}
    results["T_training"] = train_both(train_rows, held_out, device, args, work)
    fp32, amp = results["T_training"]["off"], results["T_training"]["auto"]
    results["T_training"]["amp_speedup"] = round(amp["examples_per_second"] / fp32["examples_per_second"], 2)
    results["S_serving"] = serve_both(amp["model_dir"], texts, device, args.runs)
    if not args.skip_stack:
        results.update(through_stack(train_rows, texts, device, args, work))
    print(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
