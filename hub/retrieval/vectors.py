"""Exact nearest-neighbour search over a collection's vectors, cached in memory.

At the scale a hub holds per collection (up to a few hundred thousand entries), a matrix product
over every vector is fast enough (100,000 × 384 floats: a few milliseconds) and exact; an
approximate index (HNSW, IVF) would take over beyond a few million, and would live behind this
same `nearest`. Vectors are stored beside their entries (float16, unit length) and copied here as
float32 the first time a collection is searched; later searches read only what changed since, by
the collection's `vector_seq` (vectors stored since) and `vector_epoch` (entries removed since), so
every node's cache follows what any node wrote. New vectors go into room kept at the end of the
copy (it doubles when full), and a removed or re-embedded entry's row is only marked dead: copying
100,000 rows for each few new ones made a search beside background embedding take up to a second.
A copy is compacted when more than half of it is dead. Caches are dropped, least recently used
first, beyond `max_bytes`.
"""

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import Connection

from storage.queries import search as search_queries
from storage.store import Store

if TYPE_CHECKING:
    import numpy as np


@dataclass
class _Cached:
    epoch: int
    seq: int
    ids: "np.ndarray"
    """Entry ids, one per row of `matrix`; rows from `count` on are room for new ones."""
    matrix: "np.ndarray"
    alive: "np.ndarray"
    """False at a row whose entry was removed or embedded again."""
    count: int

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.matrix.nbytes + self.alive.nbytes)

    def snapshot(self) -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
        """(ids, matrix, alive) as of now: later appends go past these rows, and compaction makes new arrays."""
        return self.ids[:self.count], self.matrix[:self.count], self.alive[:self.count].copy()


class VectorIndex:
    def __init__(self, store: Store, model_id: str, dimension: int, max_bytes: int) -> None:
        self._store = store
        self._model_id = model_id
        self._dimension = dimension
        self._max_bytes = max_bytes
        self._cached: OrderedDict[int, _Cached] = OrderedDict()
        self._locks: dict[int, anyio.Lock] = {}
        self._compute = anyio.CapacityLimiter(1)

    async def nearest(
        self, collections: Sequence[int], query: "np.ndarray", limit: int
    ) -> list[tuple[int, float]]:
        """The `limit` entries of `collections` closest to `query` (unit length): (entry id, cosine), best first."""
        positions = await self._store.read(lambda conn: search_queries.vector_positions(conn, collections))
        parts = [await self._refreshed(collection, *positions[collection]) for collection in positions]
        parts = [part for part in parts if len(part[0])]
        if not parts:
            return []
        return await anyio.to_thread.run_sync(_top, parts, query, limit, limiter=self._compute)

    async def _refreshed(self, collection: int, epoch: int, seq: int) -> tuple["np.ndarray", ...]:
        lock = self._locks.setdefault(collection, anyio.Lock())
        async with lock:
            cached = self._cached.get(collection)
            if cached is not None and 2 * int((~cached.alive[:cached.count]).sum()) > cached.count:
                cached = None  # mostly dead rows: load afresh
            if cached is None or cached.epoch != epoch or cached.seq != seq:
                cached = await self._store.read(lambda conn: self._refresh(conn, collection, epoch, cached))
                self._cached[collection] = cached
                self._evict()
            self._cached.move_to_end(collection)
            return cached.snapshot()

    def _refresh(self, conn: Connection, collection: int, epoch: int, cached: _Cached | None) -> _Cached:
        import numpy as np

        if cached is None:
            cached = _Cached(0, 0, np.zeros(0, dtype=np.int64), np.zeros((0, self._dimension), dtype=np.float32),
                             np.zeros(0, dtype=np.bool_), 0)
        if cached.epoch != epoch:  # entries were removed: their rows die
            alive = np.array(search_queries.embedded_entries(conn, collection, self._model_id), dtype=np.int64)
            cached.alive[:cached.count] &= np.isin(cached.ids[:cached.count], alive)
        rows = search_queries.vectors_after(conn, collection, self._model_id, cached.seq)
        if rows:
            new_ids = np.array([entry_id for _, entry_id, _ in rows], dtype=np.int64)
            new = np.frombuffer(b"".join(vector for _, _, vector in rows), dtype=np.float16)
            cached.alive[:cached.count] &= ~np.isin(cached.ids[:cached.count], new_ids)  # embedded again
            _append(cached, new_ids, new.reshape(len(rows), self._dimension))
            cached.seq = max(rows[-1][0], cached.seq)
        cached.epoch = epoch
        return cached

    def _evict(self) -> None:
        while len(self._cached) > 1 and sum(c.nbytes for c in self._cached.values()) > self._max_bytes:
            collection, _ = self._cached.popitem(last=False)
            self._locks.pop(collection, None)


def _append(cached: _Cached, ids: "np.ndarray", vectors: "np.ndarray") -> None:
    """Put rows after the last, growing the room (doubling) when it is full."""
    import numpy as np

    end = cached.count + len(ids)
    if end > len(cached.ids):
        room = max(end, 2 * len(cached.ids))
        grown_ids = np.zeros(room, dtype=np.int64)
        grown_matrix = np.zeros((room, cached.matrix.shape[1]), dtype=np.float32)
        grown_alive = np.zeros(room, dtype=np.bool_)
        grown_ids[:cached.count] = cached.ids[:cached.count]
        grown_matrix[:cached.count] = cached.matrix[:cached.count]
        grown_alive[:cached.count] = cached.alive[:cached.count]
        cached.ids, cached.matrix, cached.alive = grown_ids, grown_matrix, grown_alive
    cached.ids[cached.count:end] = ids
    cached.matrix[cached.count:end] = vectors
    cached.alive[cached.count:end] = True
    cached.count = end


def _top(parts: list[tuple["np.ndarray", ...]], query: "np.ndarray", limit: int) -> list[tuple[int, float]]:
    import numpy as np

    ids = np.concatenate([ids for ids, _, _ in parts])
    scores = np.concatenate([np.where(alive, matrix @ query, -np.inf) for _, matrix, alive in parts])
    held = np.flatnonzero(np.isfinite(scores))
    if len(held) > limit:
        held = held[np.argpartition(-scores[held], limit)[:limit]]
    best = held[np.argsort(-scores[held], kind="stable")]
    return [(int(ids[i]), float(scores[i])) for i in best]
