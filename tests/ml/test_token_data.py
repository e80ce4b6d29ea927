"""First-sub-token labels and windows: a sentence longer than max_length gets a tag for every word."""
from __future__ import annotations

import numpy as np

from models.base import IGNORE_INDEX
from ml.token_data import gather, text_windows, word_tags, word_windows

LABEL2ID = {"O": 0, "B-person": 1, "I-person": 2}
ID2LABEL = list(LABEL2ID)


def test_first_sub_token_of_each_word_carries_its_tag(tokenizer):
    words = ["Zürichbergstrasse", "Obama", "ok"]
    tags = ["O", "B-person", "O"]
    windows, word_ids = word_windows(tokenizer, [words], max_length=64, tags=[tags], label2id=LABEL2ID)
    assert len(windows) == 1
    window, ids = windows[0], word_ids[0]
    labelled = [(p, label) for p, label in zip(window.positions, window.labels) if label != IGNORE_INDEX]
    # one label per word, at its first sub-token, whatever the number of sub-tokens
    assert [ids[p] for p, _ in labelled] == [0, 1, 2]
    assert [label for _, label in labelled] == [0, 1, 0]
    assert len(window.input_ids) == len(ids) + 2  # [CLS] ... [SEP]
    assert window.input_ids[0] == tokenizer.cls_token_id and window.input_ids[-1] == tokenizer.sep_token_id


def test_a_sentence_longer_than_max_length_gets_a_tag_for_every_word(tokenizer):
    words = [f"word{i}" for i in range(300)]
    tags = ["B-person" if i % 7 == 0 else "O" for i in range(300)]
    windows, word_ids = word_windows(tokenizer, [words], max_length=32, stride=8, tags=[tags], label2id=LABEL2ID)
    assert len(windows) > 1 and all(len(w.input_ids) <= 32 for w in windows)
    labelled_words = [word_ids[0][p] for w in windows for p, label in zip(w.positions, w.labels)
                      if label != IGNORE_INDEX]
    assert sorted(labelled_words) == list(range(300))  # every word labelled once, none cut off

    # inference reads every word back from the windows that score it
    probs = []
    for w in windows:
        p = np.zeros((len(w.input_ids), 3), dtype=np.float32)
        for k, position in enumerate(w.positions):
            if position is not None:
                word = word_ids[0][position]
                p[k, 1 if word % 7 == 0 else 0] = 1.0
        probs.append(p)
    token_probs = gather(windows, probs, [len(word_ids[0])])[0]
    predicted, scores = word_tags(token_probs, word_ids[0], 300, ID2LABEL)
    assert predicted == tags and all(s == 1.0 for s in scores)


def test_text_windows_keep_character_offsets(tokenizer):
    text = "Hello   Zürich!"
    windows, sources = text_windows(tokenizer, [text], max_length=16, stride=4)
    tokens = sources[0]
    assert [text[s:e] for s, e in tokens["offsets"]][0] == "Hello"
    assert len(windows[0].input_ids) == len(tokens["tokens"]) + 2
