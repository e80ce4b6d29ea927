"""Fixtures for training and inference tests: tiny random encoders (built once per session) and a real tokenizer."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCES = [
    "great flight, thanks!",
    "@united my bag is lost again and nobody at the desk could tell me anything useful at all",
    "meh",
    "The new phone is fine I guess, battery life could be better though.",
]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    from tests.factories import tiny_bert_encoder

    return tiny_bert_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory):
    from tests.factories import tiny_distilbert_encoder

    return tiny_distilbert_encoder(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def tokenizer(tiny_bert_dir):
    from models.encoders import load_tokenizer

    return load_tokenizer(tiny_bert_dir)


@pytest.fixture
def encoder_dir(request, tiny_bert_dir, tiny_distilbert_dir):
    """Encoder directory for a family name (distilbert needs a DistilBERT checkpoint)."""
    return tiny_distilbert_dir if request.param == "distilbert" else tiny_bert_dir
