"""The narrow interface between the batching engine (``ml.batching``) and a loaded model: a *backend*.

As in text-embeddings-inference, the engine owns the queue and the batcher and the backend only knows its model:

* ``encode(inputs) -> rows`` tokenizes one request's inputs (in the caller's thread). A row is what one position of
  a padded batch holds (a list of token ids; it may carry more, such as token type ids). Most task shapes make
  one row per input and return the rows as a plain list. A task shape where one input becomes several rows
  (a long text's windows in token classification, a question's context windows, a multiple-choice question's
  (question, choice) pairs) returns :class:`Encoded`: every row of every input, how many rows each input has, and
  whatever :meth:`Backend.results` will need to read the outputs back (offsets, word ids, ...).
* ``forward(rows) -> outputs`` runs one padded batch of rows from any requests, in any order: one output per row,
  either as a sequence or as a mapping of columns ``{name: [value per row]}`` (as a multitask model's
  ``{task: probabilities}``), see :func:`row_outputs`. No per-row logic beyond unpadding belongs here: the engine
  may put any rows together.
* ``results(outputs, encoded) -> [JSON-ready result per input]`` turns the outputs of one request back into its
  results; ``encoded`` is what ``encode`` returned for that request.

The engine regroups the outputs per input before ``results``: with a plain list of rows, input ``i``'s output is
its row's output; with :class:`Encoded`, it is the list of its rows' outputs, in the order ``encode`` gave them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class InputError(ValueError):
    """Inputs a backend's ``encode`` refuses with a message for the user (a question too long for the model's
    windows): the job fails with that message, never a traceback.

    ``position``: the 0-based index, among the inputs of that ``encode`` call, of the input it is about (None: not
    one input); ``reason``: what is wrong with it, without saying which input; ``noun``: what the backend calls an
    input ("question"). A caller that encodes its inputs chunk by chunk names it by its real number with
    :meth:`about` (a dataset's row 300, not the 44th of a chunk).
    """

    def __init__(self, message: str, *, position: int | None = None, reason: str | None = None,
                 noun: str = "input") -> None:
        super().__init__(message)
        self.position, self.reason, self.noun = position, reason, noun

    def about(self, name: str) -> "InputError":
        """This error naming its input ``name`` (e.g. ``"row 300"``); itself when it is about no one input."""
        if self.position is None or self.reason is None:
            return self
        return type(self)(f"{name} {self.reason}", reason=self.reason, noun=self.noun)


@dataclass
class Encoded:
    """One request's rows when an input may become several rows.

    ``rows``: every row of every input, input after input. ``counts[i]``: how many of them belong to input ``i``
    (0 is allowed: that input's output is an empty list). ``context``: anything ``results`` needs besides the
    outputs; the engine never looks at it.
    """

    rows: list[Any]
    counts: list[int]
    context: Any = field(default=None)

    def __post_init__(self) -> None:
        if any(count < 0 for count in self.counts) or sum(self.counts) != len(self.rows):
            raise ValueError(f"{len(self.rows)} rows do not match the row counts per input {self.counts}")


@runtime_checkable
class Backend(Protocol):
    """What the batching engine needs from a loaded model (see the module docstring)."""

    def encode(self, inputs: Sequence[Any]) -> Sequence[Any] | Encoded:
        """Rows for ``inputs`` (one per input), or :class:`Encoded` when an input may take several rows."""

    def forward(self, rows: list[Any]) -> Sequence[Any] | Mapping[str, Sequence[Any]]:
        """One output per row of one padded batch (a sequence, or columns ``{name: [value per row]}``)."""

    def results(self, outputs: list[Any], encoded: Sequence[Any] | Encoded | None = None) -> list[Any]:
        """One request's per-input outputs -> its JSON-ready results, in input order."""


def row_outputs(out: Sequence[Any] | Mapping[str, Sequence[Any]], rows: int) -> list[Any]:
    """``forward``'s answer for a batch of ``rows`` rows as one output per row: a sequence as it is, columns
    ``{name: [value per row]}`` as ``[{name: value}]``. Raises ``ValueError`` when it does not have one value per
    row (a backend bug: results must never be attributed to the wrong row)."""
    if isinstance(out, Mapping):
        if any(len(column) != rows for column in out.values()):
            raise ValueError(f"forward answered {[len(c) for c in out.values()]} values for a batch of {rows} rows")
        return [{name: column[b] for name, column in out.items()} for b in range(rows)]
    out = list(out)
    if len(out) != rows:
        raise ValueError(f"forward answered {len(out)} outputs for a batch of {rows} rows")
    return out


def input_outputs(encoded: Sequence[Any] | Encoded, outputs: list[Any]) -> list[Any]:
    """Per-row ``outputs`` (in the order of ``encoded``'s rows) regrouped per input (see the module docstring)."""
    if not isinstance(encoded, Encoded):
        return outputs
    grouped, start = [], 0
    for count in encoded.counts:
        grouped.append(outputs[start:start + count])
        start += count
    return grouped


def rows_of(encoded: Sequence[Any] | Encoded) -> list[Any]:
    """The rows of what ``encode`` returned, in order."""
    return list(encoded.rows) if isinstance(encoded, Encoded) else list(encoded)
