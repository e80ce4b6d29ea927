"""bench/mc_topics.py's rows: each tweet a context, the six topic phrases as choices in a per-row order, the label the
true topic's position -- rows the multiple-choice checks accept."""
from __future__ import annotations

import json

from bench.mc_topics import QUESTION, TOPIC_PHRASES, topic_rows
from core.task_types.multiple_choice import resolve_layout

TWEETS = [{"text": f"tweet {i}", "topic": topic} for i, topic in enumerate(list(TOPIC_PHRASES) * 3)]


def test_topic_rows_point_at_the_true_topic_in_shuffled_choices():
    rows = topic_rows(TWEETS)
    layout = resolve_layout(list(rows[0]), choices_column="choices")
    orders = set()
    for number, (row, tweet) in enumerate(zip(rows, TWEETS), start=1):
        example = layout.example(row, number)  # what the upload check and training read
        assert example.context == tweet["text"] and example.question == QUESTION
        assert sorted(example.choices) == sorted(TOPIC_PHRASES.values())
        assert example.choices[example.label] == TOPIC_PHRASES[tweet["topic"]]
        orders.add(tuple(example.choices))
    assert len(orders) > 1  # the position of a topic does not give it away
    assert topic_rows(TWEETS) == rows and json.loads(rows[0]["choices"])  # the same rows every run
