"""Cutting a document's text into passages: about 300 tokens each, overlapping by about 12%, along
paragraph and page boundaries where it can.

A passage never crosses a page (so its citation names one page). Paragraphs (blank-line separated)
are packed whole while they fit; a longer one is cut at sentence ends, and a sentence longer than a
passage at words. The next passage repeats the last ~12% of the previous one's words, so a fact
that straddles a cut is whole in one of them. Sizes count words (`\\S+`) at 1.3 tokens each: what
the embedding model's WordPiece makes of English on average.

Offsets are those of the document's text: its pages joined by `PAGE_BREAK`. Each passage's text is
exactly `document_text[start:end]`.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

TARGET_TOKENS: Final = 300
TOKENS_PER_WORD: Final = 1.3
TARGET_WORDS: Final = int(TARGET_TOKENS / TOKENS_PER_WORD)
OVERLAP_WORDS: Final = int(TARGET_WORDS * 0.12)
PAGE_BREAK: Final = "\n\n"
_WORD = re.compile(r"\S+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Passage:
    index: int
    page: int | None
    """1-based, for paged documents."""
    start: int
    end: int
    text: str


def document_text(pages: list[str]) -> str:
    return PAGE_BREAK.join(pages)


def passages(pages: list[str], *, paged: bool) -> list[Passage]:
    found: list[Passage] = []
    offset = 0
    for number, page in enumerate(pages, start=1):
        for start, end in _cuts(page):
            found.append(Passage(len(found), number if paged else None, offset + start, offset + end,
                                 page[start:end]))
        offset += len(page) + len(PAGE_BREAK)
    return found


def _cuts(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of the passages of one page."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if not words:
        return
    breaks = _break_points(text, words)
    first = 0
    while first < len(words):
        last = min(first + TARGET_WORDS, len(words))  # exclusive: the passage is words[first:last]
        if last < len(words):
            # The latest paragraph end, else sentence end, that leaves the passage at least half full.
            for kind in ("paragraph", "sentence"):
                fitting = [b for b in breaks[kind] if first + TARGET_WORDS // 2 <= b <= last]
                if fitting:
                    last = fitting[-1]
                    break
        yield words[first][0], words[last - 1][1]
        if last == len(words):
            return
        first = max(last - OVERLAP_WORDS, first + 1)


def _break_points(text: str, words: list[tuple[int, int]]) -> dict[str, list[int]]:
    """Word indexes before which a paragraph or a sentence begins."""
    starts = [start for start, _ in words]
    found: dict[str, list[int]] = {"paragraph": [], "sentence": []}
    for kind, pattern in (("paragraph", _PARAGRAPH_BREAK), ("sentence", _SENTENCE_END)):
        position = 0
        for match in pattern.finditer(text):
            while position < len(starts) and starts[position] < match.end():
                position += 1
            if 0 < position < len(starts):
                found[kind].append(position)
    return found
