"""Entity aggregation and windows: equal to the transformers token-classification pipeline on the same saved model."""
from __future__ import annotations

import pytest

from ml.token_aggregation import STRATEGIES, ScoredToken, aggregate
from ml.token_windows import check_stride, plan_windows

TAGS = ["O", "B-person", "I-person", "B-location", "I-location"]
TEXTS = [
    "Barack Obama visited New York City yesterday",
    "unbelievably, Zürich's mayor tweeted @someone about #snowfall",
    "I ❤ Paris 🇫🇷 and San Francisco",
    "a",
]


@pytest.fixture(scope="module")
def token_model(tiny_bert_dir, tmp_path_factory):
    """A random BertForTokenClassification over the tiny encoder, its biases pushed so that entities occur."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    config = BertConfig.from_pretrained(tiny_bert_dir, num_labels=len(TAGS),
                                        id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = BertForTokenClassification(config)
        model.classifier.weight.data.normal_(0, 2.0)  # sharp, varied per-token decisions
    model.eval()
    directory = tmp_path_factory.mktemp("token-model")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(directory)
    return directory


def _ours(directory, text, strategy):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForTokenClassification.from_pretrained(directory).eval()
    encoded = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[0]
    probs = torch.softmax(logits.float(), dim=-1).numpy()
    ids = encoded["input_ids"][0].tolist()
    tokens = [
        ScoredToken(tokenizer.convert_ids_to_tokens(i), int(s), int(e), probs[k], i == tokenizer.unk_token_id)
        for k, (i, (s, e), special) in enumerate(zip(ids, encoded["offset_mapping"][0].tolist(),
                                                     encoded["special_tokens_mask"][0].tolist()))
        if not special
    ]
    return aggregate(text, tokens, TAGS, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_aggregation_equals_the_transformers_pipeline(token_model, strategy):
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(token_model), aggregation_strategy=strategy, device="cpu")
    found = 0
    for text in TEXTS:
        theirs = tagger(text)
        ours = _ours(token_model, text, strategy)
        key = "entity" if strategy == "none" else "entity_group"
        assert [(e[key], e["start"], e["end"]) for e in ours] == [(e[key], e["start"], e["end"]) for e in theirs]
        assert [e["score"] for e in ours] == pytest.approx([float(e["score"]) for e in theirs], abs=1e-4)
        assert all(e["word"] == text[e["start"]:e["end"]] for e in ours)
        found += len(ours)
    assert found > 0  # the random model does tag something: the comparison is not vacuous


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="aggregation_strategy"):
        aggregate("a", [], TAGS, "longest")


def test_windows_cover_every_token_once_with_the_most_context():
    windows = plan_windows(length=20, max_length=10, stride=4)  # 8 content tokens per window, step 4
    assert [(w.start, w.end) for w in windows] == [(0, 8), (4, 12), (8, 16), (12, 20)]
    scored = [w.start + i for w in windows for i, s in enumerate(w.scores) if s]
    assert sorted(scored) == list(range(20))  # every token scored exactly once
    # token 6 sits at margin 1 in window 0 (0..7) and margin 2 in window 1 (4..11): window 1 scores it
    assert windows[1].scores[6 - 4] and not windows[0].scores[6]


def test_short_sequences_are_one_window_and_bad_strides_are_refused():
    assert plan_windows(5, 10, 4) == plan_windows(5, 10, 0)
    assert len(plan_windows(5, 10, 4)) == 1
    with pytest.raises(ValueError, match="stride"):
        check_stride(max_length=10, stride=8)
    with pytest.raises(ValueError):
        check_stride(max_length=2, stride=0)


def test_a_100000_token_sentence_is_windowed_not_cut():
    windows = plan_windows(100_000, 128, 32)
    assert windows[0].start == 0 and windows[-1].end == 100_000
    assert sum(sum(w.scores) for w in windows) == 100_000
    assert max(w.end - w.start for w in windows) == 126
