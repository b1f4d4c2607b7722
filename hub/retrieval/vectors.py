"""Exact nearest-neighbour search over a collection's vectors, cached in memory.

At the scale a hub holds per collection (up to a few hundred thousand entries), a matrix product
over every vector is fast enough (100,000 × 384 floats: a few milliseconds) and exact; an
approximate index (HNSW, IVF) would take over beyond a few million, and would live behind this
same `nearest`. Vectors are stored beside their entries (float16, unit length) and copied here as
float32 the first time a collection is searched; later searches read only what changed since, by
the collection's `vector_seq` (vectors stored since) and `vector_epoch` (entries removed since), so
every node's cache follows what any node wrote. Caches are dropped, least recently used first,
beyond `max_bytes`.
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
    """Entry ids, one per row of `matrix`."""
    matrix: "np.ndarray"

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.matrix.nbytes)


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
        parts = [part for part in parts if len(part.ids)]
        if not parts:
            return []
        return await anyio.to_thread.run_sync(_top, parts, query, limit, limiter=self._compute)

    async def _refreshed(self, collection: int, epoch: int, seq: int) -> _Cached:
        lock = self._locks.setdefault(collection, anyio.Lock())
        async with lock:
            cached = self._cached.get(collection)
            if cached is None or cached.epoch != epoch or cached.seq != seq:
                cached = await self._store.read(lambda conn: self._refresh(conn, collection, epoch, cached))
                self._cached[collection] = cached
                self._evict()
            self._cached.move_to_end(collection)
            return cached

    def _refresh(self, conn: Connection, collection: int, epoch: int, cached: _Cached | None) -> _Cached:
        import numpy as np

        if cached is None:
            cached = _Cached(0, 0, np.zeros(0, dtype=np.int64), np.zeros((0, self._dimension), dtype=np.float32))
        ids, matrix = cached.ids, cached.matrix
        if cached.epoch != epoch:  # entries were removed: keep the rows of those that remain
            alive = np.array(search_queries.embedded_entries(conn, collection, self._model_id), dtype=np.int64)
            keep = np.isin(ids, alive)
            ids, matrix = ids[keep], matrix[keep]
        rows = search_queries.vectors_after(conn, collection, self._model_id, cached.seq)
        seq = rows[-1][0] if rows else cached.seq
        if rows:
            new_ids = np.array([entry_id for _, entry_id, _ in rows], dtype=np.int64)
            new = np.frombuffer(b"".join(vector for _, _, vector in rows), dtype=np.float16)
            new = new.reshape(len(rows), self._dimension).astype(np.float32)
            replaced = np.isin(ids, new_ids)  # an entry embedded again (by a newer model run)
            ids = np.concatenate([ids[~replaced], new_ids])
            matrix = np.concatenate([matrix[~replaced], new])
        return _Cached(epoch, max(seq, cached.seq), ids, matrix)

    def _evict(self) -> None:
        while len(self._cached) > 1 and sum(c.nbytes for c in self._cached.values()) > self._max_bytes:
            collection, _ = self._cached.popitem(last=False)
            self._locks.pop(collection, None)


def _top(parts: list[_Cached], query: "np.ndarray", limit: int) -> list[tuple[int, float]]:
    import numpy as np

    ids = np.concatenate([part.ids for part in parts])
    scores = np.concatenate([part.matrix @ query for part in parts])
    if len(scores) > limit:
        best = np.argpartition(-scores, limit)[:limit]
    else:
        best = np.arange(len(scores))
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(ids[i]), float(scores[i])) for i in best]
