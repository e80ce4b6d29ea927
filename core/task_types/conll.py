"""CoNLL files: one ``token<TAB or spaces>tag`` per line, a blank line between sentences.

The first column is the token and the last the tag (CoNLL-2003's middle part-of-speech / chunk columns are ignored);
``-DOCSTART-`` lines are document separators, not tokens. Each sentence becomes the row
``{"tokens": [...], "tags": [...]}``, the columns every token dataset has once stored.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from core.datasets import DatasetError

COLUMNS = ("tokens", "tags")
EXTENSIONS = (".conll", ".iob", ".iob2", ".bio", ".bioes")  # ".txt" too, when its content reads as CoNLL
DOCSTART = "-DOCSTART-"
MAX_TAG_CHARS = 100  # a tag is a short type name (B-creative-work); anything longer is not a tag


def _error(line: int, message: str) -> DatasetError:
    return DatasetError(f"line {line}: {message}", code="invalid_conll")


def conll_rows(lines: Iterable[str]) -> Iterator[dict[str, list[str]]]:
    """The sentences of a CoNLL file given as text lines (any line endings), in order.

    Raises :class:`DatasetError` (``invalid_conll``, with the line number) for a line of one column, a NUL
    character, or an over-long tag; and ``empty_file`` when the file holds no sentence.
    """
    tokens: list[str] = []
    tags: list[str] = []
    sentences = 0
    filled = False
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        fields = line.split()
        filled = filled or bool(fields)
        if not fields:  # a blank (or whitespace-only) line ends the sentence
            if tokens:
                sentences += 1
                yield {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
            continue
        if fields[0] == DOCSTART:
            continue
        if len(fields) < 2:
            raise _error(number, f"expected a token and a tag separated by a tab or spaces, got {line.strip()!r}")
        if "\x00" in line:
            raise _error(number, "the line holds a NUL character")
        token, tag = fields[0], fields[-1]
        if len(tag) > MAX_TAG_CHARS:
            raise _error(number, f"the tag is {len(tag)} characters long; at most {MAX_TAG_CHARS}")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences += 1
        yield {"tokens": tokens, "tags": tags}
    if sentences == 0:
        raise DatasetError("the CoNLL file holds no sentence" if filled else "the file is empty", code="empty_file")


def looks_like_conll(head: str) -> bool:
    """Whether the first lines of a file without a telling extension read as CoNLL: ``-DOCSTART-`` first, or a
    blank line between sentences, and every (complete) non-blank line two or more fields of which the last, the
    tag, holds no comma. A TSV of texts and labels has no blank lines between its rows, so it stays a TSV."""
    lines = head.splitlines()[:200]
    if len(head.splitlines()) > len(lines) or not head.endswith(("\n", "\r")):
        lines = lines[:-1]  # the head may cut its last line
    filled = [line for line in lines if line.strip()]
    if not filled or filled[0].lstrip().startswith(("{", "[")):
        return False
    if not all(len(line.split()) >= 2 and "," not in line.split()[-1] for line in filled):
        return False
    if any(" " in line.split("\t", 1)[0].strip() for line in filled if "\t" in line):
        return False  # a tab-separated first field with spaces is a text, not a token
    starts_with_docstart = filled[0].split()[0] == DOCSTART
    separated = any(not lines[i].strip() and lines[i - 1].strip() and lines[i + 1].strip()
                    for i in range(1, len(lines) - 1))
    return starts_with_docstart or separated


def write_conll(rows: Iterable[tuple[list[str], list[str]]]) -> Iterator[str]:
    """CoNLL text for (tokens, tags) sentences: ``token\\ttag`` lines, a blank line after each sentence."""
    for tokens, tags in rows:
        for token, tag in zip(tokens, tags):
            yield f"{token}\t{tag}\n"
        yield "\n"
