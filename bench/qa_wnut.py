"""Benchmark: question answering on WNUT-17 read as reading comprehension -- quality against a plain transformers
recipe, and serving speed against the best raw forward.

    .venv/bin/python bench/qa_wnut.py --train-sentences 600 --dev-sentences 300 --json bench/results/qa_wnut.json
    .venv/bin/python bench/qa_wnut.py --limit-smoke        # a few sentences: does everything run?

**The set** (:func:`qa_rows`): each WNUT-17 sentence (``../shared/datasets/ner/wnut17_{train,dev}.conll``, tokens
joined by single spaces) is a context; for each of the six entity types the question "Which <type> is mentioned?"
has as gold answers every entity of that type in the sentence (character offsets into the joined context; several
answers allowed), or none (unanswerable). ``--train-sentences`` / ``--dev-sentences`` take a fixed-seed sample of
sentences (the same rows for every run).

**Quality** (the issue's goal: the platform >= the plain recipe in no more training time):

* platform: a ``core.options.TrainRequest`` built as the API builds it from ``{"task_type": "question-answering",
  "epochs": 2, "max_length": 128}`` + the columns (everything else the defaults: it holds out its own validation
  split for the best checkpoint), trained by ``ml.loop.train_classifier``;
* plain: ``AutoModelForQuestionAnswering`` from the same MiniLM weights, AdamW lr 5e-5, batch 16, linear warm-up over
  10% then linear decay, 2 epochs, on the same windows (``ml.qa_features.make_windows``, max_length 128, the
  platform's doc_stride; a window without its answer labelled at [CLS]); no validation, last step kept;
* both answer the dev questions through the same raw forward and the same post-processing
  (``ml.qa_postprocess.best_answers``, no answer allowed), scored by the platform's ``squad_metrics``;
* optionally (``--token``) a token-classification model trained by the platform on the same training sentences
  (``epochs`` 2, ``max_length`` 128): its answer to "Which <type>?" is the first entity of that type it tags.

**Serving**: N dev questions classified through the platform's serving path (``ml.qa_serving.QAPredictor`` on the
``ml.batching`` engine, in chunks of the classify job's size) against the best raw forward (windows tokenized once,
sorted by token count, the engine's batch size) plus the same post-processing, in one run, on the platform's model.
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
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = REPO / ".." / "shared" / "datasets" / "ner"
TRAIN, DEV = DATA_DIR / "wnut17_train.conll", DATA_DIR / "wnut17_dev.conll"
TYPES = ("corporation", "creative-work", "group", "location", "person", "product")
SEED = 42
REQUEST = {"task_type": "question-answering", "epochs": 2, "max_length": 128}
PLAIN = {"learning_rate": 5e-5, "batch_size": 16, "epochs": 2, "warmup_ratio": 0.1, "max_length": 128}
SERVE_BATCH = 64  # the engine's default max_batch_size: the raw forward uses the same


def question(entity_type: str) -> str:
    return f"Which {entity_type} is mentioned?"


# ------------------------------------------------------------------------------------------------ the set


def entity_spans(tokens: Sequence[str], tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(type, char_start, char_end)`` of every entity of a BIO-tagged sentence in ``" ".join(tokens)``; an ``I-``
    tag that does not continue an entity of its type starts one (CoNLL rules)."""
    spans: list[list] = []
    offset, previous = 0, "O"
    for token, tag in zip(tokens, tags):
        start, end = offset, offset + len(token)
        offset = end + 1  # the joining space
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if kind is None:
            previous = "O"
            continue
        if tag.startswith("I-") and previous == kind and spans:
            spans[-1][2] = end
        else:
            spans.append([kind, start, end])
        previous = kind
    return [tuple(s) for s in spans]


def qa_rows(sentences: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[dict[str, str]]:
    """Six question rows per ``(tokens, tags)`` sentence, in the upload shape the platform reads: ``context``,
    ``question`` and ``answers`` (JSON ``{"text": [...], "answer_start": [...]}``; empty lists: unanswerable)."""
    rows = []
    for tokens, tags in sentences:
        context = " ".join(tokens)
        spans = entity_spans(tokens, tags)
        for kind in TYPES:
            mine = [(start, end) for t, start, end in spans if t == kind]
            answers = {"text": [context[s:e] for s, e in mine], "answer_start": [s for s, _ in mine]}
            rows.append({"context": context, "question": question(kind), "answers": json.dumps(answers)})
    return rows


def read_sentences(content: bytes) -> list[tuple[list[str], list[str]]]:
    """The CoNLL file's sentences as ``(tokens, tags)``, read as an upload is (``core.datasets.read_rows``)."""
    from core.datasets import read_rows

    return [(json.loads(r["tokens"]), json.loads(r["tags"])) for r in read_rows(content, "conll").rows]


def sample(items: list, n: int | None) -> list:
    """A fixed-seed sample of ``n`` items in their file order (all without ``n``)."""
    if n is None or n >= len(items):
        return list(items)
    keep = sorted(random.Random(SEED).sample(range(len(items)), n))
    return [items[i] for i in keep]


def gold(rows: Sequence[dict[str, str]]) -> list[list[str]]:
    return [json.loads(r["answers"])["text"] for r in rows]


# ------------------------------------------------------------------------------------------------ shared pieces


def raw_logits(forward: Callable, windows: Sequence, pad_id: int, batch_size: int) -> list[tuple]:
    """Per window its (start, end) logits: windows sorted by token count, fixed batches, ``forward(ids, mask, types)
    -> (B, T, 2)``; the order of ``windows`` restored."""
    import torch

    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids), reverse=True)
    out: list = [None] * len(windows)
    with torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            batch = [windows[i] for i in order[begin:begin + batch_size]]
            width = len(batch[0].input_ids)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            types = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            for b, w in enumerate(batch):
                n = len(w.input_ids)
                ids[b, :n], mask[b, :n] = torch.tensor(w.input_ids), 1
                types[b, :n] = torch.tensor(w.token_type_ids)
            values = forward(ids, mask, types).float().numpy()  # (B, T, 2)
            for b, i in enumerate(order[begin:begin + batch_size]):
                n = len(windows[i].input_ids)
                out[i] = (values[b, :n, 0], values[b, :n, 1])
    return out


def answers_of(rows: Sequence[dict[str, str]], windows: Sequence, logits: Sequence[tuple]) -> list[dict]:
    """Each question's best answer read off all its windows (``best_answers``, no answer allowed)."""
    from ml.qa_postprocess import best_answers

    per_question: list[list] = [[] for _ in rows]
    for w, (start, end) in zip(windows, logits):
        per_question[w.source].append((start, end, w.offsets))
    return [best_answers(r["context"], per_question[i], allow_no_answer=True)[0] for i, r in enumerate(rows)]


def score(predicted: Sequence[str], rows: Sequence[dict[str, str]]) -> dict:
    from core.task_types.question_answering import squad_metrics

    metrics = squad_metrics(list(predicted), gold(rows))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}


def _printer(name: str):
    last = [0.0]

    def progress(fraction: float, info: dict) -> None:
        now = time.monotonic()
        if now - last[0] >= 60 or info.get("phase") in ("epoch_end", "done"):
            last[0] = now
            shown = {k: info[k] for k in ("phase", "epoch", "step", "total_steps", "train_loss", "f1")
                     if k in info}
            print(f"  [{name}] {fraction:6.1%} {shown}", flush=True)

    return progress


# ------------------------------------------------------------------------------------------------ quality


def platform_config(overrides: dict | None = None):
    """The training configuration the API builds from :data:`REQUEST` (+ the columns, + ``overrides``)."""
    from core.options import TrainRequest

    body = {"dataset_id": 1, **REQUEST, "context_column": "context", "question_column": "question",
            "answers_column": "answers", **(overrides or {})}
    return TrainRequest.model_validate(body).config()


def run_platform(train_rows: list[dict], model_dir: Path, cache_dir: Path,
                 overrides: dict | None = None) -> tuple[dict, object]:
    """Train through ``ml.loop.train_classifier``; the wall time of the whole call."""
    from ml.loop import train_classifier

    config = platform_config(overrides)
    started = time.monotonic()
    result = train_classifier(train_rows, config, model_dir, encoder_cache_dir=cache_dir,
                              progress=_printer("platform"))
    seconds = time.monotonic() - started
    shown = ("family", "epochs", "batch_size", "learning_rate", "warmup_ratio", "max_length", "doc_stride",
             "validation_split", "metric")
    return {"run": "platform", "train_seconds": round(seconds, 1),
            "validation_f1": result.metrics.get("f1"), "best_step": result.metrics.get("best_step"),
            "settings": {k: v for k, v in config.model_dump().items() if k in shown}}, config


def run_plain(train_rows: list[dict], doc_stride: int):
    """The transformers recipe of the module docstring; returns (report, model, tokenizer)."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, get_linear_schedule_with_warmup

    from core.task_types.question_answering import Columns, read_examples
    from ml.qa_features import make_windows
    from ml.qa_training import answer_span
    from models.encoders import default_encoder_path

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    started = time.monotonic()
    path = default_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForQuestionAnswering.from_pretrained(path)
    examples = list(read_examples(train_rows, Columns()))
    windows = make_windows(tokenizer, [e.question for e in examples], [e.context for e in examples],
                           PLAIN["max_length"], doc_stride, answers=[answer_span(e) for e in examples])
    size = PLAIN["batch_size"]
    total = -(-len(windows) // size) * PLAIN["epochs"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=PLAIN["learning_rate"])
    schedule = get_linear_schedule_with_warmup(optimizer, int(PLAIN["warmup_ratio"] * total), total)
    model.train()
    step = 0
    for epoch in range(PLAIN["epochs"]):
        order = list(range(len(windows)))
        rng.shuffle(order)
        for b in range(0, len(order), size):
            batch = [windows[i] for i in order[b:b + size]]
            width = max(len(w.input_ids) for w in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            types = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            for r, w in enumerate(batch):
                n = len(w.input_ids)
                ids[r, :n], mask[r, :n], types[r, :n] = torch.tensor(w.input_ids), 1, torch.tensor(w.token_type_ids)
            loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types,
                         start_positions=torch.tensor([w.start_position for w in batch]),
                         end_positions=torch.tensor([w.end_position for w in batch])).loss
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
    return {"run": "plain transformers", "train_seconds": round(seconds, 1),
            "settings": {**PLAIN, "doc_stride": doc_stride}}, model, tokenizer


def dev_quality(forward: Callable, tokenizer, dev_rows: list[dict], doc_stride: int) -> dict:
    """EM / F1 (and the breakdown) of ``forward`` on the dev questions: same windows, raw forward, post-processing."""
    from ml.qa_features import make_windows

    started = time.monotonic()
    windows = make_windows(tokenizer, [r["question"] for r in dev_rows], [r["context"] for r in dev_rows],
                           PLAIN["max_length"], doc_stride)
    logits = raw_logits(forward, windows, tokenizer.pad_token_id, SERVE_BATCH)
    predicted = [a["answer"] for a in answers_of(dev_rows, windows, logits)]
    return {**score(predicted, dev_rows), "predict_seconds": round(time.monotonic() - started, 1)}


def run_token(train_sentences: list, dev_sentences: list, dev_rows: list[dict], cache_dir: Path) -> dict:
    """A token-classification model by the platform on the same sentences; its first entity of each type answers."""
    from core.options import TrainRequest
    from ml.loop import train_classifier
    from ml.token_serving import TokenPredictor

    rows = [{"tokens": json.dumps(t), "tags": json.dumps(g)} for t, g in train_sentences]
    config = TrainRequest.model_validate({"dataset_id": 1, "task_type": "token-classification", "epochs": 2,
                                          "max_length": 128, "tokens_column": "tokens",
                                          "tags_column": "tags"}).config()
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        train_classifier(rows, config, Path(out) / "model", encoder_cache_dir=cache_dir, progress=_printer("token"))
        seconds = time.monotonic() - started
        predictor = TokenPredictor.load(Path(out) / "model")
        tags = [r["tags"] for r in predictor.engine.predict([t for t, _ in dev_sentences])]
    predicted = []
    for (tokens, _), sentence_tags in zip(dev_sentences, tags):
        context = " ".join(tokens)
        spans = entity_spans(tokens, sentence_tags)
        for kind in TYPES:
            first = next(((s, e) for t, s, e in spans if t == kind), None)
            predicted.append(context[first[0]:first[1]] if first else "")
    return {"run": "token classification (platform, first entity of the type)", "train_seconds": round(seconds, 1),
            **score(predicted, dev_rows), "settings": {"epochs": 2, "max_length": 128}}


# ------------------------------------------------------------------------------------------------ serving


def serving(model_dir: Path, rows: list[dict]) -> dict:
    """Platform serving path vs the best raw forward + the same post-processing, on the same questions."""
    import torch

    from ml.qa_features import make_windows
    from ml.qa_serving import QAPredictor
    from worker.jobs.classify import CLASSIFY_CHUNK

    predictor = QAPredictor.load(model_dir)
    questions, contexts = [r["question"] for r in rows], [r["context"] for r in rows]
    engine = predictor.engine
    engine.predict(questions[:8], pairs=contexts[:8])  # warm-up: the loop thread and the first allocations
    model = predictor.model

    def forward(ids, mask, types):
        return model(ids, mask, token_type_ids=types).logits  # (B, T, 2)

    timings: dict[str, list[float]] = {"platform": [], "raw": []}
    platform_answers: list = []
    raw_answers: list = []
    for _ in range(2):  # alternated, best of two each: the machine is shared
        started = time.perf_counter()
        platform_answers = []
        for begin in range(0, len(rows), CLASSIFY_CHUNK):
            platform_answers.extend(engine.predict(questions[begin:begin + CLASSIFY_CHUNK],
                                                   pairs=contexts[begin:begin + CLASSIFY_CHUNK]))
        timings["platform"].append(time.perf_counter() - started)
        started = time.perf_counter()
        windows = make_windows(predictor.tokenizer, questions, contexts, predictor.max_length, predictor.doc_stride)
        with torch.inference_mode():
            logits = raw_logits(forward, windows, predictor.pad_id, SERVE_BATCH)
        raw_answers = answers_of(rows, windows, logits)
        timings["raw"].append(time.perf_counter() - started)
    same = sum(p["answer"] == r["answer"] for p, r in zip(platform_answers, raw_answers))
    best = {k: min(v) for k, v in timings.items()}
    return {"questions": len(rows), "platform_seconds": round(best["platform"], 2),
            "raw_seconds": round(best["raw"], 2), "all_seconds": {k: [round(x, 2) for x in v] for k, v in timings.items()},
            "platform_questions_per_s": round(len(rows) / best["platform"], 1),
            "raw_questions_per_s": round(len(rows) / best["raw"], 1),
            "ratio": round(best["raw"] / best["platform"], 3), "same_answers": same,
            "batch_size": SERVE_BATCH, "chunk": CLASSIFY_CHUNK}


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-sentences", type=int, help="fixed-seed sample of training sentences (default all)")
    parser.add_argument("--dev-sentences", type=int, help="fixed-seed sample of dev sentences (default all)")
    parser.add_argument("--serve-questions", type=int, default=1200, help="dev questions for the serving check")
    parser.add_argument("--token", action="store_true", help="also a token-classification model's entities")
    parser.add_argument("--skip-quality", action="store_true", help="train the platform model for serving only")
    parser.add_argument("--limit-smoke", action="store_true", help="12 train / 6 dev sentences: does it all run?")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--only", help="comma-separated parts: platform, plain, serving (default: all; two processes "
                        "can then train side by side under the same load)")
    parser.add_argument("--platform-options", type=json.loads, default={},
                        help='more train-request options for the platform run, as JSON (e.g. \'{"batch_size": 16}\')')
    args = parser.parse_args()
    if not TRAIN.exists() or not DEV.exists():
        print(f"skipped: the WNUT-17 files are not in {DATA_DIR.resolve()} (../shared/datasets/ner)")
        return
    import torch

    if args.limit_smoke:
        args.train_sentences, args.dev_sentences, args.serve_questions = 12, 6, 36
    train_all, dev_all = read_sentences(TRAIN.read_bytes()), read_sentences(DEV.read_bytes())
    train_sentences, dev_sentences = sample(train_all, args.train_sentences), sample(dev_all, args.dev_sentences)
    train_rows, dev_rows = qa_rows(train_sentences), qa_rows(dev_sentences)
    answerable = sum(bool(g) for g in gold(train_rows))
    print(f"WNUT-17 as QA: {len(train_sentences)}/{len(train_all)} training sentences -> {len(train_rows)} questions "
          f"({answerable} answerable), {len(dev_sentences)}/{len(dev_all)} dev sentences -> {len(dev_rows)} "
          f"questions; {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)",
          flush=True)
    report: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__}",
                    "train_sentences": len(train_sentences), "train_sentences_total": len(train_all),
                    "dev_sentences": len(dev_sentences), "dev_sentences_total": len(dev_all),
                    "train_questions": len(train_rows), "train_answerable": answerable,
                    "dev_questions": len(dev_rows), "dev_answerable": sum(bool(g) for g in gold(dev_rows)),
                    "seed": SEED, "platform_options": args.platform_options, "runs": []}
    parts = set(args.only.split(",")) if args.only else {"platform", "plain", "serving"}
    with tempfile.TemporaryDirectory() as work:
        model_dir, cache = Path(work) / "model", Path(work) / "cache"
        config = platform_config(args.platform_options)
        if parts & {"platform", "serving"}:
            ours, config = run_platform(train_rows, model_dir, cache, args.platform_options)
            print(f"  platform trained: {ours}", flush=True)
        if "platform" in parts and not args.skip_quality:
            from models.io import load_model

            model, tokenizer = load_model(model_dir, "cpu")
            model.eval()
            ours.update(dev_quality(lambda i, m, t: model(i, m, token_type_ids=t).logits, tokenizer, dev_rows,
                                    config.doc_stride))
            report["runs"].append(ours)
            print(f"  platform: {ours}", flush=True)
        if "plain" in parts and not args.skip_quality:
            plain, plain_model, plain_tokenizer = run_plain(train_rows, config.doc_stride)

            def plain_forward(ids, mask, types):
                out = plain_model(input_ids=ids, attention_mask=mask, token_type_ids=types)
                return torch.stack([out.start_logits, out.end_logits], dim=-1)  # (B, T, 2)

            plain.update(dev_quality(plain_forward, plain_tokenizer, dev_rows, config.doc_stride))
            report["runs"].append(plain)
            print(f"  plain: {plain}", flush=True)
        if args.token and not args.skip_quality:
            report["runs"].append(run_token(train_sentences, dev_sentences, dev_rows, cache))
            print(f"  token: {report['runs'][-1]}", flush=True)
        if "serving" in parts:
            serve_rows = dev_rows[:args.serve_questions]
            report["serving"] = serving(model_dir, serve_rows)
            print(f"  serving: {report['serving']}", flush=True)

    if report["runs"]:
        print("\n| run | train wall time (s) | EM | F1 | has-answer F1 | no-answer accuracy |")
        print("|---|---|---|---|---|---|")
        for run in report["runs"]:
            print(f"| {run['run']} | {run['train_seconds']:.0f} | {run['exact_match']:.4f} | {run['f1']:.4f} | "
                  f"{run['has_answer_f1']:.4f} | {run['no_answer_accuracy']:.4f} |")
    s = report.get("serving")
    if s:
        print(f"\nserving {s['questions']} questions: platform {s['platform_seconds']}s, raw {s['raw_seconds']}s: "
              f"{s['ratio']:.2f}x of raw (goal >= 0.85x); same answers {s['same_answers']}/{s['questions']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
