"""Tag schemes, entity decoding, span alignment and entity metrics against hand-checked cases."""
from __future__ import annotations

import pytest

from core.task_types.tagging import (
    BIOES, IOB1, IOB2, PLAIN, Entity, align_spans, decode_entities, detect_scheme, encode_entities, entity_metrics,
    split_tag, tag_metrics,
)


def test_split_tag_reads_bilou_as_bioes():
    assert split_tag("B-person") == ("B", "person")
    assert split_tag("L-loc") == ("E", "loc")
    assert split_tag("U-loc") == ("S", "loc")
    assert split_tag("O") == ("O", "")
    assert split_tag("NN") == ("", "NN")
    assert split_tag("B-creative-work") == ("B", "creative-work")


@pytest.mark.parametrize("tags, expected", [
    # IOB2
    (["B-PER", "I-PER", "O", "B-LOC"], [Entity(0, 2, "PER"), Entity(3, 4, "LOC")]),
    # two adjacent entities of one type
    (["B-PER", "B-PER", "I-PER"], [Entity(0, 1, "PER"), Entity(1, 3, "PER")]),
    # IOB1: I- opens, B- separates neighbours of the same type
    (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], [Entity(0, 2, "PER"), Entity(2, 3, "PER"), Entity(4, 5, "LOC")]),
    # a type change inside a run of I- starts a new entity
    (["I-PER", "I-LOC"], [Entity(0, 1, "PER"), Entity(1, 2, "LOC")]),
    # BIOES
    (["S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"], [Entity(0, 1, "PER"), Entity(1, 4, "LOC"), Entity(4, 5, "LOC")]),
    # BILOU
    (["U-PER", "B-LOC", "L-LOC", "O"], [Entity(0, 1, "PER"), Entity(1, 3, "LOC")]),
    # an entity running to the end of the sentence
    (["O", "B-ORG", "I-ORG"], [Entity(1, 3, "ORG")]),
    ([], []),
    (["O", "O"], []),
])
def test_decode_entities_hand_checked(tags, expected):
    assert decode_entities(tags) == expected


@pytest.mark.parametrize("sentences, scheme", [
    ([["B-PER", "I-PER", "O"], ["B-LOC"]], IOB2),
    ([["I-PER", "I-PER", "O"], ["I-LOC", "B-LOC"]], IOB1),
    ([["S-PER", "O"], ["B-LOC", "E-LOC"]], BIOES),
    ([["U-PER", "O"], ["B-LOC", "L-LOC"]], BIOES),
    ([["NN", "VB", "DT"]], PLAIN),
    ([["O", "O"]], IOB2),  # nothing to tell: the default
])
def test_detect_scheme(sentences, scheme):
    assert detect_scheme(sentences) == scheme


@pytest.mark.parametrize("scheme", [IOB2, IOB1, BIOES])
def test_encode_then_decode_round_trips(scheme):
    entities = [Entity(0, 2, "PER"), Entity(2, 3, "PER"), Entity(4, 5, "LOC"), Entity(5, 8, "ORG")]
    tags = encode_entities(9, entities, scheme)
    assert decode_entities(tags) == entities
    assert detect_scheme([tags]) == scheme


def test_encode_hand_checked():
    entities = [Entity(0, 2, "PER"), Entity(2, 3, "PER")]
    assert encode_entities(4, entities, IOB2) == ["B-PER", "I-PER", "B-PER", "O"]
    assert encode_entities(4, entities, IOB1) == ["I-PER", "I-PER", "B-PER", "O"]
    assert encode_entities(4, entities, BIOES) == ["B-PER", "E-PER", "S-PER", "O"]


def test_align_spans_exact_snapped_and_dropped():
    text = "Visit New York City now , Bob"
    # word offsets as a whitespace pre-tokenizer gives them
    offsets, position = [], 0
    for word in text.split(" "):
        offsets.append((position, position + len(word)))
        position += len(word) + 1
    exact = (6, 19, "LOC")  # "New York City"
    inside = (27, 28, "PER")  # "o" of "Bob": snapped to the whole word
    spaces = (5, 6, "MISC")  # only a space: covers no word, dropped
    overlapping = (10, 14, "LOC")  # "York" again: overlaps the first span, dropped
    result = align_spans(offsets, [inside, exact, spaces, overlapping])
    assert result.entities == [Entity(1, 4, "LOC"), Entity(6, 7, "PER")]
    assert (result.snapped, result.dropped) == (1, 2)


def test_align_spans_partial_word_at_both_ends_snaps_outward():
    offsets = [(0, 5), (6, 11)]  # "hello world"
    result = align_spans(offsets, [(3, 8, "X")])
    assert result.entities == [Entity(0, 2, "X")]
    assert result.snapped == 1


def test_entity_metrics_hand_checked():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    m = entity_metrics(gold, pred)
    # gold: PER(0,2) LOC(3,4) ORG(0,1); predicted: PER(0,2) ORG(0,1) LOC(1,2); 2 hits
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert m["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["support"] == 3


def test_entity_metrics_wrong_boundary_is_a_miss():
    m = entity_metrics([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_entity_metrics_refuse_ragged_input():
    with pytest.raises(ValueError):
        entity_metrics([["O"]], [["O", "O"]])


def test_entity_metrics_equal_seqeval_default_mode():
    seqeval = pytest.importorskip("seqeval.metrics")
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["I-ORG", "O", "B-PER"], ["O", "B-MISC", "I-MISC", "I-PER"]]
    pred = [["B-PER", "O", "O", "B-LOC", "I-LOC"], ["B-ORG", "O", "I-PER"], ["O", "B-MISC", "I-MISC", "B-PER"]]
    m = entity_metrics(gold, pred)
    assert m["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
    assert m["recall"] == pytest.approx(seqeval.recall_score(gold, pred))
    assert m["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    report = seqeval.classification_report(gold, pred, output_dict=True)
    for kind, scores in m["per_type"].items():
        assert scores["f1"] == pytest.approx(report[kind]["f1-score"])
        assert scores["support"] == report[kind]["support"]


def test_tag_metrics_for_plain_tags():
    gold = [["NN", "VB", "DT"], ["NN"]]
    pred = [["NN", "NN", "DT"], ["NN"]]
    m = tag_metrics(gold, pred)
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["per_tag"]["NN"]["precision"] == pytest.approx(2 / 3)
    assert m["per_tag"]["VB"]["recall"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.8 + 0.0 + 1.0) / 3)


# ---------------------------------------------------------------- CoNLL


from core.datasets import DatasetError  # noqa: E402
from core.task_types.conll import conll_rows, looks_like_conll, write_conll  # noqa: E402


def test_conll_reads_sentences_first_and_last_columns_and_skips_docstart():
    text = ("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\t\n"
            "Peter\tB-PER\r\nBlackburn  I-PER\n")
    rows = list(conll_rows(text.splitlines(keepends=True)))
    assert rows == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
                    {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}]


def test_conll_line_of_one_column_is_an_error_with_its_line_number():
    with pytest.raises(DatasetError) as error:
        list(conll_rows(["a\tO\n", "b\n"]))
    assert error.value.code == "invalid_conll" and "line 2" in error.value.message


@pytest.mark.parametrize("lines, code", [
    (["\n", "-DOCSTART- O\n", "\n"], "empty_file"),
    (["a\tB-" + "x" * 200 + "\n"], "invalid_conll"),
    (["a\x00b\tO\n"], "invalid_conll"),
])
def test_conll_bad_files(lines, code):
    with pytest.raises(DatasetError) as error:
        list(conll_rows(lines))
    assert error.value.code == code


def test_conll_round_trip_and_detection():
    rows = [(["New", "York"], ["B-LOC", "I-LOC"]), (["hi"], ["O"])]
    text = "".join(write_conll(rows))
    assert [(r["tokens"], r["tags"]) for r in conll_rows(text.splitlines())] == rows
    assert looks_like_conll(text)
    assert not looks_like_conll("text,label\nhello,pos\n")
    assert not looks_like_conll('{"tokens": ["a"]}\n')


def test_spans_dropped_on_the_way_to_words_are_false_negatives():
    """A gold span no word could carry (``align_spans`` dropped it) stays in the support of its type: the model is
    scored against every gold entity, not only those the words could hold."""
    from core.task_types.tagging import align_spans, entity_metrics

    alignment = align_spans([(0, 3), (4, 9)], [(0, 3, "person"), (3, 4, "location"), (4, 9, "location")])
    assert alignment.dropped == 1 and dict(alignment.dropped_types) == {"location": 1}
    gold = pred = [["B-person", "B-location"]]
    metrics = entity_metrics(gold, pred, unscored=alignment.dropped_types)
    assert metrics["support"] == 3 and metrics["precision"] == 1.0 and metrics["recall"] == 2 / 3
    assert metrics["per_type"]["location"]["support"] == 2 and metrics["per_type"]["person"]["recall"] == 1.0
    assert entity_metrics(gold, pred)["recall"] == 1.0
