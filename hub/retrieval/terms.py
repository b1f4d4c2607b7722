"""BM25 over a collection's terms, held in memory.

Scoring BM25 in SQL reads every posting of every query term: with 100,000 memories in a scope, a
speaker's name is in a third of them, and a search took 40–150 ms on SQLite however the query was
cut (MaxScore could skip the common terms in only two searches of three). Held in memory as an
inverted list per term (entry positions and term counts, numpy arrays), the same sums take a
millisecond or two, and they are the same on SQLite and PostgreSQL by construction.

A collection is copied from the store the first time it is searched: each entry's term counts and
length (`search_entries`). Later searches read only what changed since, by the collection's
`entry_seq` (entries stored since, in commit order) and `entry_epoch` (entries removed since: the
positions of those no longer stored are marked dead), so every node's copy follows what any node
wrote. Copies are dropped, least recently used first, beyond `max_bytes`; a copy is rebuilt when
more than half of it is dead.

score = Σ idf(t) · tf·(k1 + 1) / (tf + k1·(1 − b + b·length/avg_length)), over the query's terms,
with Lucene's idf(t) = ln(1 + (N − df + 0.5) / (df + 0.5)); N, df and the average length are those
of the searched collections together.
"""

import math
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Final

import anyio
import numpy as np
from sqlalchemy import Connection

from storage.queries import search as search_queries
from storage.store import Store

K1: Final = 1.2
B: Final = 0.75
"""BM25's usual parameters (those of SQLite FTS5 and Lucene)."""


@dataclass(slots=True)
class _Postings:
    positions: array = field(default_factory=lambda: array("q"))
    """The positions (in `_Collection.ids`) of the entries holding the term."""
    counts: array = field(default_factory=lambda: array("i"))
    """How often the term occurs in each of them."""


@dataclass
class _Collection:
    epoch: int = 0
    seq: int = 0
    ids: array = field(default_factory=lambda: array("q"))
    """Entry ids by position."""
    seqs: array = field(default_factory=lambda: array("q"))
    """Entry numbers by position: unlike ids (which SQLite reuses), never given twice in a collection."""
    lengths: array = field(default_factory=lambda: array("i"))
    alive: bytearray = field(default_factory=bytearray)
    """1 at the position of an entry still stored, 0 once it was removed."""
    dead: int = 0
    postings: dict[str, _Postings] = field(default_factory=dict)
    nbytes: int = 0
    """About what the copy holds: its arrays, and a dictionary slot and key per term."""

    def add(self, seq: int, entry_id: int, length: int, counts: dict[str, int]) -> None:
        position = len(self.ids)
        self.ids.append(entry_id)
        self.seqs.append(seq)
        self.lengths.append(length)
        self.alive.append(1)
        self.nbytes += 21 + 12 * len(counts)
        for term, count in counts.items():
            postings = self.postings.get(term)
            if postings is None:
                postings = self.postings[term] = _Postings()
                self.nbytes += 350  # the dictionary slot, the key, the two arrays (measured)
            postings.positions.append(position)
            postings.counts.append(count)

    def keep_only(self, stored: list[int]) -> None:
        """Mark dead the positions of entries whose numbers are not among those `stored`."""
        alive = np.frombuffer(self.alive, dtype=np.bool_)
        gone = alive & ~np.isin(np.frombuffer(self.seqs, dtype=np.int64), np.array(stored, dtype=np.int64))
        self.dead += int(gone.sum())
        alive[gone] = False


class TermIndex:
    def __init__(self, store: Store, max_bytes: int) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._cached: OrderedDict[int, _Collection] = OrderedDict()
        self._locks: dict[int, anyio.Lock] = {}
        self._compute = anyio.CapacityLimiter(1)

    async def best(self, collections: Sequence[int], terms: Sequence[str], limit: int) -> list[tuple[int, float]]:
        """The `limit` entries of `collections` with the highest BM25 for `terms`: (entry id, score), best
        first, ties in entry order."""
        if not terms:
            return []
        positions = await self._store.read(lambda conn: search_queries.entry_positions(conn, collections))
        async with AsyncExitStack() as held:
            # Each copy stays locked while it is scored: a refresh appends to the arrays being read.
            parts = []
            for collection in sorted(positions):
                await held.enter_async_context(self._locks.setdefault(collection, anyio.Lock()))
                parts.append(await self._refreshed(collection, *positions[collection]))
            self._evict(keep=set(positions))
            return await anyio.to_thread.run_sync(_rank, parts, list(terms), limit, limiter=self._compute)

    async def _refreshed(self, collection: int, epoch: int, seq: int) -> _Collection:
        cached = self._cached.get(collection)
        if cached is not None and cached.dead * 2 > len(cached.ids):
            cached = None  # mostly removed entries: rebuild rather than carry them
        if cached is None or cached.epoch != epoch or cached.seq != seq:
            cached = await self._store.read(lambda conn: _refresh(conn, collection, epoch, cached))
            self._cached[collection] = cached
        self._cached.move_to_end(collection)
        return cached

    def _evict(self, keep: set[int]) -> None:
        """Drop the least recently searched copies beyond `max_bytes` (never those of the search under way)."""
        for collection in list(self._cached):
            if sum(c.nbytes for c in self._cached.values()) <= self._max_bytes:
                return
            if collection not in keep:
                del self._cached[collection]
                self._locks.pop(collection, None)


def _refresh(conn: Connection, collection: int, epoch: int, cached: _Collection | None) -> _Collection:
    """`cached` brought up to date with the store (a new copy when there is none)."""
    if cached is None:
        cached = _Collection()
    elif cached.epoch != epoch:
        cached.keep_only(search_queries.entry_seqs(conn, collection))
    for seq, entry_id, length, counts in search_queries.entries_after(conn, collection, cached.seq):
        cached.add(seq, entry_id, length, counts)
        cached.seq = seq
    cached.epoch = epoch
    return cached


def _rank(parts: list[_Collection], terms: list[str], limit: int) -> list[tuple[int, float]]:
    alive = [np.frombuffer(part.alive, dtype=np.bool_) for part in parts]
    lengths = [np.frombuffer(part.lengths, dtype=np.int32) for part in parts]
    entries = sum(int(live.sum()) for live in alive)
    if not entries:
        return []
    average = sum(int(length[live].sum()) for length, live in zip(lengths, alive, strict=True)) / entries
    postings: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for index, part in enumerate(parts):
        for term in terms:
            if (found := part.postings.get(term)) is not None:
                at = np.frombuffer(found.positions, dtype=np.int64)
                counts = np.frombuffer(found.counts, dtype=np.int32)
                live = alive[index][at]
                postings.setdefault(term, []).append((index, at[live], counts[live]))
    scores = [np.zeros(len(part.ids)) for part in parts]
    for lists in postings.values():
        frequency = sum(len(at) for _, at, _ in lists)
        idf = math.log(1 + (entries - frequency + 0.5) / (frequency + 0.5))
        for index, at, counts in lists:
            tf = counts.astype(np.float64)
            norm = K1 * (1 - B + B * lengths[index][at] / max(average, 1e-9))
            scores[index] += np.bincount(at, weights=idf * tf * (K1 + 1) / (tf + norm), minlength=len(scores[index]))
    ids = np.concatenate([np.frombuffer(part.ids, dtype=np.int64) for part in parts])
    score = np.concatenate(scores)
    held = np.flatnonzero(score > 0)
    if len(held) > limit:  # those scoring at least the limit-th best, ties with it included
        held = held[score[held] >= np.partition(score[held], len(held) - limit)[len(held) - limit]]
    best = held[np.lexsort((ids[held], -score[held]))][:limit]
    return [(int(ids[i]), float(score[i])) for i in best]
