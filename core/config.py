"""Settings read from environment variables, with defaults that work on a laptop with nothing installed."""
from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VAR_DIR = REPO_ROOT / "var"

# The embedded Redis started by `make run` listens here when REDIS_URL is not set.
EMBEDDED_REDIS_PORT = int(os.environ.get("EMBEDDED_REDIS_PORT", "6399"))


SQL_MODEL_STORE = "sql"  # MODEL_STORE's value for model files kept in the database (core.artifacts)

MAX_TOKEN_CHARS = 512  # longest API token the web accepts in an Authorization header


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Every tunable of the platform. Build with :meth:`from_env`; override in tests with :meth:`replace`."""

    database_url: str = f"sqlite:///{VAR_DIR / 'bertqueue.db'}"
    redis_url: str = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
    # where model files live (core.artifacts): a directory every process sees (one host, or a shared volume), or
    # "sql": in the database itself (DATABASE_URL), fetched into each host's MODEL_CACHE_DIR when used
    model_store: str = str(VAR_DIR / "models")
    # the SQL store's local copies on this host (least recently used evicted past MODEL_CACHE_MB), and the scratch
    # space of trainings and imports there
    model_cache_dir: str = str(VAR_DIR / "model-cache")
    model_cache_mb: int = 10_240
    device: str = "auto"  # auto | cpu | cuda
    # training precision on CUDA: auto = mixed precision (bf16 where supported, else fp16 + loss scaling), off = fp32
    # (ml.precision); the CPU always trains in fp32
    amp: str = "auto"
    # the GPUs `make run` / compose start one classification and one training worker on each: "" (none: one worker
    # pair on DEVICE), "all", or indices "0,1" (core.gpus; a GPU that does not exist is a start-up error)
    gpus: str = ""
    max_upload_mb: int = 50
    # a model zip to import (POST /api/v1/models/import): a BERT-base checkpoint is about 440 MB
    max_model_upload_mb: int = 2048
    # what an imported checkpoint may grow to once unzipped, and its model's size: the largest a worker loads (a
    # BERT-large is 24 layers, hidden 1024, 335M parameters; multilingual BERT's vocabulary is 119,547 tokens)
    max_model_extracted_mb: int = 2048
    max_model_parameters: int = 400_000_000
    max_model_layers: int = 24
    max_model_hidden_size: int = 1024
    max_model_vocab_size: int = 150_000
    max_model_positions: int = 4096
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32))
    predict_timeout_s: float = 30.0
    max_texts_per_job: int = 10_000
    max_text_chars: int = 20_000
    job_max_attempts: int = 3
    lease_seconds: int = 120  # a running job whose heartbeat is older than this may be reclaimed
    requeue_after_s: int = 300  # a queued job older than this with no worker is re-sent by the reconciler
    celery_eager: bool = False  # run tasks in-process (tests, demos)
    # os.pathsep-separated directories API users may train local encoders from, besides the packaged default and
    # MODEL_STORE/encoders (always allowed; empty: those only). "/" allows any folder (a single-user laptop).
    encoder_roots: str = ""
    allow_hub_encoders: bool = True  # hub ids (only useful where a hub is reachable)
    # serving engine (ml.batching): how long a batch waits for partners, and how big a batch may get.
    # The wait in ms; None (unset): the device's default (ml.batching.CPU_WAIT_MS / GPU_WAIT_MS: 0 / 2)
    batch_wait_ms: float | None = None
    # rows x longest row (padded tokens), and rows, per forward pass; None (unset): the device's default
    # (ml.batching.device_batch_limits: 8192 / 64 on the CPU, larger on a GPU)
    max_batch_tokens: int | None = None
    max_batch_size: int | None = None
    # batches of one model run at once, each on its share of the cores; None (unset): the device's default
    # (ml.batching.EngineOptions.for_device: one on a GPU, one per core up to 4 on the CPU)
    inference_streams: int | None = None
    quantize_default: bool = False  # int8 dynamic quantization when neither the request nor the model says
    reconcile_every_s: float = 60.0  # how often the reconciler process looks for lost jobs
    # the reconciler removes a model store folder no model row names once it is this old (a publish in flight is
    # younger: its row is being committed)
    model_sweep_grace_s: float = 3600.0
    # accounts and limits (issue 7)
    admin_token: str = ""  # when set (>= 16 chars): the bootstrap admin's API token is exactly this value
    trusted_hosts: str = ""  # comma-separated Host names the web answers to; empty: any
    metrics_public: bool = False  # /metrics without a token (a scraper on a private network); else admins only
    max_active_jobs_per_user: int = 20  # queued + running jobs per user; beyond: 429
    max_training_work: int = 2_000_000_000  # epochs x rows x max_length of one training job
    # padded tokens (rows x longest row) per training forward + backward pass: a larger logical batch is split into
    # micro-batches with gradient accumulation (ml.loop.train_step). MiniLM at length 512 costs ~0.3 GB per row.
    max_train_batch_tokens: int = 4096
    # gunicorn threads per web process: `make run`, `make web` and docker-compose start the web with WEB_THREADS
    # (their defaults equal this one; tests/test_compose.py checks), and the waiters below follow it
    web_threads: int = 24
    # /predict calls waiting at once per web process; unset: WEB_THREADS - 4 (4 threads stay free for everything
    # else), 20 by default, so 16 concurrent callers never see a 202 even when their keep-alive connections all
    # landed on one of the two web processes. The rest answer 202 at once with the job to poll
    predict_max_waiters: int = 20
    # /predict calls of at most 64 inputs go to the classification workers through one Redis list, many jobs per
    # batch (core.predict_lane); false: one Celery message each, as every other job
    predict_lane: bool = True
    train_time_limit_s: float = 6 * 3600.0  # a training running longer fails and frees its slot
    classify_time_limit_s: float = 3600.0
    broker_visibility_timeout_s: int = 3600  # Redis redelivers an unacked message after this long
    # dataset shape (issue 16): checked while an upload is scanned, so an over-wide or over-long file stops early
    max_dataset_rows: int = 1_000_000
    max_dataset_columns: int = 1_000
    # storage quotas per user (issue 16); 0: no limit. Admins are exempt unless QUOTA_EXEMPT_ADMINS is false.
    max_datasets_per_user: int = 200
    max_dataset_mb_per_user: int = 2_048  # the bytes of a user's uploaded datasets (stored in SQL)
    max_models_per_user: int = 100  # live (not deleted) models, counting trainings still queued or running
    max_model_mb_per_user: int = 20_480  # model files in MODEL_STORE (a BERT-base model is about 440 MB)
    max_predictions_per_user: int = 5_000_000  # stored prediction rows, counting classify jobs queued or running
    quota_exempt_admins: bool = True
    # web sessions and logins (issue 16)
    session_lifetime_hours: float = 12.0  # a web login ends this long after it began (its CSRF tokens with it)
    session_cookie_secure: bool = False  # send the session cookie over HTTPS only: turn on behind HTTPS
    # failed logins per client address, and per username, before 429 (Flask-Limiter syntax, e.g. "10 per minute")
    login_rate_limit: str = "10 per minute"
    # body of any request that is not an upload (forms, JSON); uploads and typed texts take MAX_UPLOAD_MB
    max_body_kb: int = 1024
    proxy_hops: int = 0  # reverse proxies in front of the web whose X-Forwarded-For/-Proto are trusted

    # name of the environment variable for each field (no annotation: a class attribute, not a field)
    _ENV = {
        "database_url": "DATABASE_URL",
        "redis_url": "REDIS_URL",
        "model_store": "MODEL_STORE",
        "model_cache_dir": "MODEL_CACHE_DIR",
        "model_cache_mb": "MODEL_CACHE_MB",
        "device": "DEVICE",
        "amp": "AMP",
        "gpus": "GPUS",
        "max_upload_mb": "MAX_UPLOAD_MB",
        "max_model_upload_mb": "MAX_MODEL_UPLOAD_MB",
        "max_model_extracted_mb": "MAX_MODEL_EXTRACTED_MB",
        "max_model_parameters": "MAX_MODEL_PARAMETERS",
        "max_model_layers": "MAX_MODEL_LAYERS",
        "max_model_hidden_size": "MAX_MODEL_HIDDEN_SIZE",
        "max_model_vocab_size": "MAX_MODEL_VOCAB_SIZE",
        "max_model_positions": "MAX_MODEL_POSITIONS",
        "secret_key": "SECRET_KEY",
        "predict_timeout_s": "PREDICT_TIMEOUT_S",
        "max_texts_per_job": "MAX_TEXTS_PER_JOB",
        "max_text_chars": "MAX_TEXT_CHARS",
        "job_max_attempts": "JOB_MAX_ATTEMPTS",
        "lease_seconds": "LEASE_SECONDS",
        "requeue_after_s": "REQUEUE_AFTER_S",
        "celery_eager": "CELERY_EAGER",
        "encoder_roots": "ENCODER_ROOTS",
        "allow_hub_encoders": "ALLOW_HUB_ENCODERS",
        "batch_wait_ms": "BATCH_WAIT_MS",
        "max_batch_tokens": "MAX_BATCH_TOKENS",
        "max_batch_size": "MAX_BATCH_SIZE",
        "inference_streams": "INFERENCE_STREAMS",
        "quantize_default": "QUANTIZE",
        "reconcile_every_s": "RECONCILE_EVERY_S",
        "model_sweep_grace_s": "MODEL_SWEEP_GRACE_S",
        "admin_token": "BERTQUEUE_ADMIN_TOKEN",
        "trusted_hosts": "TRUSTED_HOSTS",
        "metrics_public": "METRICS_PUBLIC",
        "max_active_jobs_per_user": "MAX_ACTIVE_JOBS_PER_USER",
        "max_training_work": "MAX_TRAINING_WORK",
        "max_train_batch_tokens": "MAX_TRAIN_BATCH_TOKENS",
        "web_threads": "WEB_THREADS",
        "predict_max_waiters": "PREDICT_MAX_WAITERS",
        "predict_lane": "PREDICT_LANE",
        "train_time_limit_s": "TRAIN_TIME_LIMIT_S",
        "classify_time_limit_s": "CLASSIFY_TIME_LIMIT_S",
        "broker_visibility_timeout_s": "BROKER_VISIBILITY_TIMEOUT_S",
        "max_dataset_rows": "MAX_DATASET_ROWS",
        "max_dataset_columns": "MAX_DATASET_COLUMNS",
        "max_datasets_per_user": "MAX_DATASETS_PER_USER",
        "max_dataset_mb_per_user": "MAX_DATASET_MB_PER_USER",
        "max_models_per_user": "MAX_MODELS_PER_USER",
        "max_model_mb_per_user": "MAX_MODEL_MB_PER_USER",
        "max_predictions_per_user": "MAX_PREDICTIONS_PER_USER",
        "quota_exempt_admins": "QUOTA_EXEMPT_ADMINS",
        "session_lifetime_hours": "SESSION_LIFETIME_HOURS",
        "session_cookie_secure": "SESSION_COOKIE_SECURE",
        "login_rate_limit": "LOGIN_RATE_LIMIT",
        "max_body_kb": "MAX_BODY_KB",
        "proxy_hops": "PROXY_HOPS",
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        """Build settings from ``environ`` (default: ``os.environ``); unset or empty variables keep defaults."""
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(cls._ENV.get(f.name, ""), "")
            if not raw:
                continue
            # annotations are strings under `from __future__ import annotations`
            parse = {"bool": _bool, "int": int, "int | None": int, "float": float,
                     "float | None": float}.get(f.type, str)
            try:
                values[f.name] = parse(raw)
            except ValueError:
                raise ValueError(f"{cls._ENV[f.name]}={raw!r} is not a valid {f.type}") from None
        if "predict_max_waiters" not in values:
            values["predict_max_waiters"] = max(1, values.get("web_threads", cls.web_threads) - 4)
        settings = cls(**values)
        if settings.web_threads < 1 or settings.predict_max_waiters < 1:
            raise ValueError("WEB_THREADS and PREDICT_MAX_WAITERS must be >= 1")
        if settings.device not in {"auto", "cpu", "cuda"}:
            raise ValueError(f"DEVICE must be auto, cpu or cuda, not {settings.device!r}")
        from core.gpus import parse_gpus

        parse_gpus(settings.gpus)  # GpuConfigError (a ValueError) for a malformed GPUS
        if settings.amp not in {"auto", "off"}:
            raise ValueError(f"AMP must be auto or off, not {settings.amp!r}")
        wait = settings.batch_wait_ms
        if (wait is not None and not 0 <= wait < math.inf) or any(limit is not None and limit < 1 for limit in
                                                                 (settings.max_batch_tokens, settings.max_batch_size,
                                                                  settings.inference_streams)):
            raise ValueError("BATCH_WAIT_MS must be a finite number >= 0, MAX_BATCH_TOKENS, MAX_BATCH_SIZE and "
                             "INFERENCE_STREAMS >= 1")
        if settings.session_lifetime_hours <= 0 or settings.max_body_kb < 1 or settings.proxy_hops < 0:
            raise ValueError("SESSION_LIFETIME_HOURS must be > 0, MAX_BODY_KB >= 1 and PROXY_HOPS >= 0")
        if settings.max_train_batch_tokens < 1:
            raise ValueError("MAX_TRAIN_BATCH_TOKENS must be >= 1")
        if "://" in settings.model_store:
            raise ValueError(f"MODEL_STORE={settings.model_store!r}: give a directory, or {SQL_MODEL_STORE!r} to keep "
                             "model files in the database (object stores such as s3:// are not supported)")
        if settings.model_cache_mb < 1:
            raise ValueError("MODEL_CACHE_MB must be >= 1")
        token = settings.admin_token
        if token and not (16 <= len(token) <= MAX_TOKEN_CHARS and token.isprintable() and token.strip() == token
                          and " " not in token):
            raise ValueError(f"BERTQUEUE_ADMIN_TOKEN must be 16 to {MAX_TOKEN_CHARS} printable characters long, "
                             "without spaces (it is sent in an Authorization header)")
        return settings

    def replace(self, **changes) -> "Settings":
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def sql_model_store(self) -> bool:
        """Model files live in the database (``MODEL_STORE=sql``), not in a directory every process sees."""
        return self.model_store.strip().lower() == SQL_MODEL_STORE

    @property
    def local_model_dir(self) -> Path:
        """This host's folder for model files: the store directory itself, or (SQL store) the local cache, under which
        trainings and imports keep their scratch (``tmp``) and hub encoders are cached (``encoders``)."""
        return Path(self.model_cache_dir if self.sql_model_store else self.model_store)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_kb * 1024

    @property
    def max_model_upload_bytes(self) -> int:
        return self.max_model_upload_mb * 1024 * 1024

    @property
    def max_model_extracted_bytes(self) -> int:
        return self.max_model_extracted_mb * 1024 * 1024

