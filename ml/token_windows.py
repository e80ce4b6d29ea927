"""Overlapping windows over a long token sequence, each token scored by exactly one window.

A sentence longer than ``max_length`` tokens is never cut: its content tokens (special tokens excluded) are covered
by windows of ``max_length - specials`` tokens, each starting ``content - stride`` tokens after the previous one, so
neighbours share ``stride`` tokens of context (what ``return_overflowing_tokens`` with ``stride`` does in the
tokenizers, for one text). A token in an overlap is *scored* by the window in which it sits farthest from an edge,
so every token, and every word, gets one prediction with the most context on both sides.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Content tokens ``[start, end)`` of the whole sequence; ``scores[i]`` tells whether this window scores its
    ``i``-th content token."""

    start: int
    end: int
    scores: tuple[bool, ...]


def check_stride(max_length: int, stride: int, specials: int = 2) -> int:
    """The content length of a window (``max_length - specials``) after checking that ``stride`` leaves room to move
    on: ``0 <= stride < content``. Raises ``ValueError`` otherwise."""
    content = max_length - specials
    if content < 1:
        raise ValueError(f"max_length {max_length} leaves no room for tokens after {specials} special tokens")
    if not 0 <= stride < content:
        raise ValueError(f"stride must be at least 0 and less than max_length - {specials} = {content}, got {stride}")
    return content


def plan_windows(length: int, max_length: int, stride: int, specials: int = 2) -> list[Window]:
    """The windows covering ``length`` content tokens (one window, possibly empty, when they fit)."""
    content = check_stride(max_length, stride, specials)
    if length <= content:
        return [Window(0, length, (True,) * length)]
    step = content - stride
    bounds = []
    start = 0
    while True:
        end = min(start + content, length)
        bounds.append((start, end))
        if end == length:
            break
        start += step
    owner = [0] * length  # the window that scores each token: the one where it is farthest from an edge
    best = [-1] * length
    for k, (start, end) in enumerate(bounds):
        for i in range(start, end):
            margin = min(i - start, end - 1 - i)
            if margin > best[i]:
                best[i], owner[i] = margin, k
    return [Window(start, end, tuple(owner[i] == k for i in range(start, end)))
            for k, (start, end) in enumerate(bounds)]
