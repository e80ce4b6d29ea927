"""Serving benchmark for token classification: one classify job of raw texts through the platform, against the raw
model forward and against transformers' token-classification pipeline, same weights, measured in one run.

    .venv/bin/python bench/ner_serving.py --json bench/results/ner_serving.json
    .venv/bin/python bench/ner_serving.py --texts 1000 --runs 1      # a quick look

Texts: WNUT-17 sentences (``../shared/datasets/ner``, every dev sentence then training sentences) with their words
joined by spaces, at most ``--texts`` of them (default 5,000;
the two files hold 4,403 sentences, so the default takes them all). The model: MiniLM (the default encoder) with a token head
trained by the platform for one epoch on 64 training sentences -- speed does not depend on the weights, and the
head has the WNUT tag set (13 tags).

platform  the real classify-job path, in process: the Flask API on a temporary SQLite database with eager Celery
          (``CELERY_EAGER``), ``POST /api/v1/jobs/classify`` with the texts (fp32, the deployment's default
          aggregation ``first``), the worker's job handler (``worker.jobs.classify``: the predictor cache, the
          model's batching engine, ``ml.token_serving``), every prediction row committed to SQL. Timed from the
          POST until the job has succeeded.
raw       (a) the same torch model: texts tokenized once (offsets, at most max_length tokens), sorted by token
          count, batches of 32, softmax, then the same aggregation (``ml.token_aggregation.aggregate``, ``first``).
pipeline  (b) ``transformers.pipeline("token-classification", batch_size=32, aggregation_strategy="first")`` on the
          same weights saved as a ``BertForTokenClassification`` checkpoint.

Each is repeated ``--runs`` times (default 3), interleaved, and reported as median [min-max] texts/s. Goals (issue
17): platform >= 0.9x raw and >= 1.5x pipeline. The entities of the three are compared too (same weights, so the
same entities, up to texts longer than max_length that the raw reference cuts and the platform windows).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
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
GOALS = {"platform/raw": 0.9, "platform/pipeline": 1.5}
BATCH = 32
HEAD_SENTENCES = 64  # the quickly trained head's training data


def read_sentences(path: Path) -> list[list[str]]:
    from core.task_types.conll import conll_rows

    with open(path, encoding="utf-8") as f:
        return [row["tokens"] for row in conll_rows(f)]


def conll_bytes(path: Path, sentences: int) -> bytes:
    """The first ``sentences`` sentences of a CoNLL file, as an upload (read back through the platform's reader:
    the WNUT files separate some sentences with whitespace-only lines)."""
    from core.task_types.conll import conll_rows, write_conll

    with open(path, encoding="utf-8") as f:
        rows = [(row["tokens"], row["tags"]) for _, row in zip(range(sentences), conll_rows(f))]
    return "".join(write_conll(rows)).encode()


# ------------------------------------------------------------------------------------------------ the platform


class Platform:
    """The API and the worker's job handlers in this process (eager Celery), on a temporary SQLite database."""

    def __init__(self, work: Path) -> None:
        from core import accounts, runtime
        from core.config import Settings
        from core.db import db
        from core.schema import Base
        from web import create_app

        import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

        # nothing listens on port 1: job-done announcements (best effort) never reach a shared Redis
        self.settings = Settings(database_url=f"sqlite:///{work / 'bench.db'}", redis_url="redis://127.0.0.1:1/0",
                                 model_store=str(work / "models"), device="cpu", secret_key="bench",
                                 celery_eager=True)
        runtime.configure(self.settings)
        Base.metadata.create_all(db.engine)
        with db.session() as session:
            _, token = accounts.create_user(session, "bench", is_admin=True)
            secret = token.token
        app = create_app({"TESTING": True, "SETTINGS": self.settings, "WTF_CSRF_ENABLED": False})
        self.client = app.test_client()
        self.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.client.open(path, method=method, **kwargs)
        if response.status_code >= 300:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.get_json()}")
        return response.get_json()

    def wait(self, job_id: str, timeout: float = 1800) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.call("GET", f"/api/v1/jobs/{job_id}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                if job["status"] != "succeeded":
                    raise SystemExit(f"job {job_id} {job['status']}: {job.get('error')}")
                return job
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(0.05)

    def train_head(self) -> dict:
        """A MiniLM token model trained through the API (one epoch on a few WNUT sentences); its model record."""
        upload = self.call("POST", "/api/v1/datasets", data={"file": (io.BytesIO(conll_bytes(TRAIN, HEAD_SENTENCES)),
                                                                      "wnut.conll")},
                           content_type="multipart/form-data")
        job = self.call("POST", "/api/v1/jobs/train", json={"dataset_id": upload["id"], "epochs": 1,
                                                            "task_type": "token-classification",
                                                            "validation_split": 0.0})
        job = self.wait(job["id"])
        return self.call("GET", f"/api/v1/models/{job['model_id']}")

    def classify(self, model_id: int, texts: list[str]) -> tuple[float, list[dict]]:
        """One classify job of ``texts``: seconds from the POST until it succeeded, and its stored predictions."""
        from sqlalchemy import func, select

        from core.db import db
        from core.schema import Prediction

        started = time.monotonic()
        job = self.call("POST", "/api/v1/jobs/classify", json={"model_id": model_id, "texts": texts,
                                                               "quantize": False})
        self.wait(job["id"])
        seconds = time.monotonic() - started
        with db.session() as session:
            stored = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job["id"]))
            results = [row.result for row in session.scalars(
                select(Prediction).where(Prediction.job_id == job["id"]).order_by(Prediction.index))]
        if stored != len(texts):
            raise SystemExit(f"the job stored {stored} predictions for {len(texts)} texts")
        return seconds, results


# ------------------------------------------------------------------------------------------------ the references


def raw_forward(model, tokenizer, id2label: list[str], texts: list[str], max_length: int) -> tuple[float, list]:
    """(a): tokenize once, sort by token count, batches of 32, softmax, ``ml.token_aggregation`` (``first``)."""
    import torch

    from ml.token_aggregation import ScoredToken, aggregate

    started = time.monotonic()
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    out: list = [None] * len(texts)
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for b in range(0, len(order), BATCH):
            rows = order[b:b + BATCH]
            longest = max(len(ids[i]) for i in rows)
            batch = torch.full((len(rows), longest), pad, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (B, T)
            for r, i in enumerate(rows):
                batch[r, :len(ids[i])] = torch.tensor(ids[i])
                mask[r, :len(ids[i])] = 1
            probs = torch.softmax(model(batch, mask).logits.float(), dim=-1).numpy()  # (B, T, C)
            for r, i in enumerate(rows):
                n = len(ids[i])
                tokens = tokenizer.convert_ids_to_tokens(ids[i][1:n - 1])
                scored = [ScoredToken(token, int(start), int(end), probs[r, k + 1], ids[i][k + 1] ==
                                      tokenizer.unk_token_id)
                          for k, (token, (start, end)) in enumerate(zip(tokens, offsets[i][1:n - 1]))]
                out[i] = aggregate(texts[i], scored, id2label, "first", subword_prefix="##")
    return time.monotonic() - started, out


def save_hf(predictor, directory: Path) -> None:
    """The platform model's weights as a ``BertForTokenClassification`` checkpoint (keys renamed as the HF export
    renames them: ``core.hf_format.PREFIXES``)."""
    from transformers import BertConfig, BertForTokenClassification

    from core.hf_format import PREFIXES

    model = predictor.model
    config = BertConfig(**{k: v for k, v in model.encoder.config.to_dict().items()
                           if k not in ("architectures", "id2label", "label2id", "num_labels")},
                        id2label=dict(enumerate(predictor.id2label)),
                        label2id={t: i for i, t in enumerate(predictor.id2label)})
    hf = BertForTokenClassification(config)
    state = {}
    for name, value in model.state_dict().items():
        for ours, theirs in PREFIXES["bert"]:
            if name.startswith(ours):
                state[theirs + name[len(ours):]] = value
                break
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if [m for m in missing if not m.endswith("position_ids")] or unexpected:
        raise SystemExit(f"weights do not map onto BertForTokenClassification: {missing} {unexpected}")
    hf.save_pretrained(directory)
    predictor.tokenizer.save_pretrained(directory)


def hf_pipeline(directory: Path):
    from transformers import pipeline

    return pipeline("token-classification", model=str(directory), tokenizer=str(directory), device="cpu",
                    aggregation_strategy="first")


def run_pipeline(pipe, texts: list[str]) -> tuple[float, list]:
    started = time.monotonic()
    out = pipe(texts, batch_size=BATCH)
    return time.monotonic() - started, out


# ------------------------------------------------------------------------------------------------ main


def _spans(entities: list[dict]) -> list[tuple]:
    return [(e["entity_group"], e["start"], e["end"]) for e in entities]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    if not TRAIN.exists() or not DEV.exists():
        print(f"skipped: the WNUT-17 files are not in {DATA_DIR.resolve()} (../shared/datasets/ner)")
        return
    import torch

    texts = [" ".join(words) for words in read_sentences(DEV) + read_sentences(TRAIN)][:args.texts]
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        stack = Platform(work)
        started = time.monotonic()
        model = stack.train_head()
        print(f"head trained through the API in {time.monotonic() - started:.0f}s: model {model['id']}, "
              f"{len(model['labels'])} tags", flush=True)

        from ml.token_serving import TokenPredictor

        predictor = TokenPredictor.load(model["artifact_dir"] if "artifact_dir" in model else _artifact(model["id"]))
        tokenizer, id2label, max_length = predictor.tokenizer, predictor.id2label, predictor.max_length
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        longer = sum(n > max_length for n in lengths)
        print(f"{len(texts)} texts, {sum(lengths) / len(lengths):.1f} tokens on average (max {max(lengths)}; "
              f"{longer} longer than max_length {max_length}); {os.cpu_count()} CPUs, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads)", flush=True)
        save_hf(predictor, work / "hf")
        pipe = hf_pipeline(work / "hf")

        # warm-up: load the worker's predictor, run each path once on a few texts
        stack.classify(model["id"], texts[:64])
        raw_forward(predictor.model, tokenizer, id2label, texts[:64], max_length)
        run_pipeline(pipe, texts[:64])

        seconds: dict[str, list[float]] = {"platform": [], "raw": [], "pipeline": []}
        outputs: dict[str, list] = {}
        for run in range(args.runs):
            for name in ("platform", "raw", "pipeline"):
                if name == "platform":
                    took, out = stack.classify(model["id"], texts)
                    out = [r["entities"] for r in out]
                elif name == "raw":
                    took, out = raw_forward(predictor.model, tokenizer, id2label, texts, max_length)
                else:
                    took, out = run_pipeline(pipe, texts)
                seconds[name].append(took)
                outputs[name] = out
                print(f"  run {run + 1} {name:<9} {took:7.1f}s  {len(texts) / took:6.1f} texts/s", flush=True)

    rate = {name: len(texts) / statistics.median(values) for name, values in seconds.items()}
    same_raw = sum(_spans(a) == _spans(b) for a, b in zip(outputs["platform"], outputs["raw"]))
    same_pipe = sum(_spans(a) == _spans(b) for a, b in zip(outputs["platform"], outputs["pipeline"]))
    print(f"\n| path | texts/s, median [min-max] of {args.runs} | ratio |")
    print("|---|---|---|")
    for name in ("platform", "raw", "pipeline"):
        values = sorted(len(texts) / s for s in seconds[name])
        ratio = "" if name == "platform" else f"platform / {name}: {rate['platform'] / rate[name]:.2f}x"
        print(f"| {name} | {rate[name]:.1f} [{values[0]:.1f}-{values[-1]:.1f}] | {ratio} |")
    ratios = {"platform/raw": rate["platform"] / rate["raw"], "platform/pipeline": rate["platform"] / rate["pipeline"]}
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}x (goal >= {GOALS[key]}x): {'MET' if value >= GOALS[key] else 'NOT MET'}")
    print(f"same entities as raw: {same_raw}/{len(texts)} texts; as the pipeline: {same_pipe}/{len(texts)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
            "texts": len(texts), "mean_tokens": round(sum(lengths) / len(lengths), 1), "longer_than_max": longer,
            "seconds": seconds, "texts_per_second": {k: round(v, 1) for k, v in rate.items()},
            "ratios": {k: round(v, 3) for k, v in ratios.items()}, "goals": GOALS,
            "same_entities": {"raw": same_raw, "pipeline": same_pipe}}, indent=1))


def _artifact(model_id: int) -> str:
    from core.db import db
    from core.schema import TrainedModel

    with db.session() as session:
        return session.get(TrainedModel, model_id).artifact_dir


if __name__ == "__main__":
    main()
