"""Text to search terms: one analysis for what is indexed and for what is asked.

Words are Unicode word characters, case-folded (NFKC), stemmed with the Snowball English stemmer
(Porter 2: "papers" and "paper" are one term), and English stopwords are dropped, from documents
and queries alike. Dropping them from queries matters: questions are full of "what", "when", "did",
which would pull in every item that has them (measured on LoCoMo: evidence recall@5 0.489 with
stopwords in the query, 0.538 without). Dropping them from the index too keeps it about a third
smaller; BM25 gave them almost no weight anyway.
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import snowballstemmer

MAX_WORD_CHARS: Final = 40
"""Longer runs of word characters (hashes, base64) are not words anyone searches for."""
MAX_QUERY_TERMS: Final = 64
STEM_CACHE: Final = 200_000

_WORD = re.compile(r"\w+")
_stemmer = snowballstemmer.stemmer("english")

STOPWORDS: Final = frozenset("""
a about above after again against all also am an and any are aren as at be because been before being
below between both but by can cannot could couldn did didn do does doesn doing don down during each few
for from further had hadn has hasn have haven having he her here hers herself him himself his how i if
in into is isn it its itself just let me more most mustn my myself no nor not now of off on once only or
other ought our ours ourselves out over own same shan she should shouldn so some such than that the their
theirs them themselves then there these they this those through to too under until up very was wasn we
were weren what when where which while who whom why will with won would wouldn you your yours yourself
yourselves s t d ll m re ve y
""".split())


@lru_cache(maxsize=STEM_CACHE)
def _stem(word: str) -> str:
    return _stemmer.stemWord(word)


def words(text: str) -> Iterator[re.Match[str]]:
    """The words of `text` as matches on its case-folded form (positions are those of the folded text)."""
    return _WORD.finditer(unicodedata.normalize("NFKC", text).casefold())


def _terms(text: str) -> Iterator[str]:
    for match in words(text):
        word = match.group()
        if len(word) <= MAX_WORD_CHARS and word not in STOPWORDS:
            yield _stem(word)


@dataclass(frozen=True)
class Analyzed:
    """An indexed text: how often each term occurs, and its length in terms (for BM25)."""

    counts: Counter[str]
    length: int


def analyze(text: str) -> Analyzed:
    counts = Counter(_terms(text))
    return Analyzed(counts, sum(counts.values()))


def query_terms(query: str) -> list[str]:
    """The distinct terms of a query, in order of first appearance."""
    return list(dict.fromkeys(_terms(query)))[:MAX_QUERY_TERMS]


def normalized(text: str) -> str:
    """The text as duplicates are detected: case-folded, with runs of whitespace made one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def highlights(text: str, terms: Iterable[str], *, limit: int = 3, context: int = 60) -> list[str]:
    """Up to `limit` passages of `text` around words matching `terms`, each match in **bold**.

    Positions are found on the case-folded text, which NFKC can make longer or shorter than the
    original; the passage is cut from the folded text then, so what is shown always lines up.
    """
    wanted = set(terms)
    if not wanted:
        return []
    folded = unicodedata.normalize("NFKC", text)
    lowered = folded.casefold()
    source = folded if len(lowered) == len(folded) else lowered
    hits = [m for m in _WORD.finditer(lowered) if len(m.group()) <= MAX_WORD_CHARS and _stem(m.group()) in wanted]
    passages: list[str] = []
    end_of_last = -1
    for hit in hits:
        if len(passages) == limit:
            break
        if hit.start() < end_of_last:
            continue
        start, end = max(0, hit.start() - context), min(len(source), hit.end() + context)
        inside = [m for m in hits if m.start() >= start and m.end() <= end]
        pieces, cursor = [], start
        for match in inside:
            pieces += [source[cursor:match.start()], "**", source[match.start():match.end()], "**"]
            cursor = match.end()
        pieces.append(source[cursor:end])
        passage = " ".join("".join(pieces).split())
        passages.append(("…" if start > 0 else "") + passage + ("…" if end < len(source) else ""))
        end_of_last = end
    return passages
