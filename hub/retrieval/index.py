"""The one retrieval component: indexing and ranking for memory recall and document search alike.

An item (a memory, a document chunk) is indexed in the transaction that writes it, so it is
searchable lexically the moment that write commits; its vector comes later, from a background job
(`embedding_job`), and it is searchable by meaning from then on. A search ranks within collections
(`collection_key`): lexically by BM25 over in-memory inverted lists (`terms.py`, so both stores
rank alike), semantically by cosine similarity over in-memory vectors (`vectors.py`), and, in
hybrid mode, by fusing both lists' scores: each list's scores are taken relative to its best (so
the best of each is 1), an item one list did not return counts as that list's lowest, and the two
are averaged. Measured on LoCoMo (evidence
recall@5): lexical 0.549, semantic 0.391, reciprocal-rank fusion 0.496 (it lets the weaker list pull
the top down), this score fusion 0.590 (bench/memory.py; the choice among fusions in
docs/memory.md).
"""

import os
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import anyio
from sqlalchemy import Connection

from protocol.errors import InvalidRequest
from protocol.memories import SearchMode
from storage.queries import jobs as job_queries
from storage.queries import search as search_queries
from storage.store import Store

from ..clock import Clock
from ..jobs import Job, JobKind, Work
from .embeddings import Embedder
from .terms import TermIndex
from .text import Analyzed, query_terms
from .vectors import VectorIndex

LEXICAL_WEIGHT: Final = 0.5
EMBED_JOB: Final = "search.embed"
EMBED_BATCH: Final = 32
EMBED_PER_CALL: Final = 8
"""Texts per worker-thread call: a thread cannot be cancelled, so a shutdown waits for the call under
way, and 8 passages of the longest kind take about a second on one core (32: four)."""
BACKFILL_PAGE: Final = 500
EMBED_GATHER_SECONDS: Final = 0.25
"""Memories written one per request are embedded in batches: a batch per write took a claim and a result
transaction from the writer each time, beside every `memories.create`."""

TextSource = Callable[[Connection, Sequence[str]], dict[str, str]]
"""The current text of items of one corpus, by item id (items gone are left out)."""


def collection_key(corpus: str, owner_id: str) -> str:
    """The collection of a corpus ("memories", "documents") owned by an agent or a conversation."""
    return f"{corpus}:{owner_id}"


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float


def index_items(conn: Connection, corpus: str, owner_id: str, items: Sequence[tuple[str, Analyzed]], now: datetime,
                *, embed: bool) -> None:
    """Index texts (`analyze`d before the write: the writer is not kept waiting on the stemmer) as items of
    `corpus` owned by `owner_id`, by item id, inside the caller's write; with `embed`, also ask for their
    vectors (jobs, run after the commit)."""
    search_queries.add_entries(conn, collection_key(corpus, owner_id),
                               [(item_id, analyzed.counts, analyzed.length) for item_id, analyzed in items], now)
    if embed:
        job_queries.ensure_all(conn, EMBED_JOB, [item_id for item_id, _ in items], {"corpus": corpus}, now, now)


def unindex_item(conn: Connection, item_id: str) -> None:
    """Remove an item from the index (terms, vector, a pending embedding), inside the caller's write."""
    search_queries.remove_entry(conn, item_id)
    job_queries.cancel(conn, EMBED_JOB, item_id)


class SearchIndex:
    def __init__(self, store: Store, clock: Clock, embedder: Embedder | None, term_cache_bytes: int,
                 vector_cache_bytes: int, sources: Mapping[str, TextSource], *, embedding_niceness: int = 0) -> None:
        self._store = store
        self._clock = clock
        self.embedder = embedder
        self._sources = dict(sources)
        self._terms = TermIndex(store, term_cache_bytes)
        self._vectors = (VectorIndex(store, embedder.model_id, embedder.dimension, vector_cache_bytes)
                         if embedder is not None else None)
        self._embedding = anyio.CapacityLimiter(1)
        # The background embedding's own thread (anyio's worker threads also run requests' store reads), at
        # a lower priority: on two cores the model otherwise takes from the threads answering requests
        # (`memories.create` p99 32-41 ms at 100,000 memories beside it, 22 ms at niceness 10).
        self._background = (ThreadPoolExecutor(1, thread_name_prefix="parley-embed", initializer=_lowered,
                                               initargs=(embedding_niceness,))
                            if embedder is not None else None)

    def close(self) -> None:
        """Let the background embedding's thread end (after the batch under way, if any)."""
        if self._background is not None:
            self._background.shutdown(wait=False, cancel_futures=True)

    @property
    def semantic(self) -> bool:
        return self.embedder is not None

    def mode_for(self, asked: SearchMode) -> SearchMode:
        """The mode a search runs in: `hybrid` is lexical without an embedding model.

        Raises:
            InvalidRequest: `semantic` was asked for and this hub has no embedding model.
        """
        if self.semantic:
            return asked
        if asked is SearchMode.SEMANTIC:
            raise InvalidRequest("semantic search needs the embedding model, which this hub does not have "
                                 "(pip install 'parley-hub[embeddings]')", {"field": "mode"})
        return SearchMode.LEXICAL

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        """Unit vectors of `texts` as stored (float16 bytes), computed on the background embedding's thread
        (a worker thread waits for each call)."""
        import numpy as np

        assert self.embedder is not None and self._background is not None
        stored: list[bytes] = []
        for first in range(0, len(texts), EMBED_PER_CALL):
            computed = self._background.submit(self.embedder.embed, list(texts[first:first + EMBED_PER_CALL]))
            vectors = await anyio.to_thread.run_sync(computed.result, limiter=self._embedding)
            stored += [row.astype(np.float16).tobytes() for row in vectors]
        return stored

    async def search(self, collections: Sequence[str], query: str, mode: SearchMode, limit: int) -> list[Hit]:
        """The `limit` best items of `collections` for `query`, best first (in the mode `mode_for` says)."""
        mode = self.mode_for(mode)
        collection_ids = await self._store.read(lambda conn: search_queries.collection_ids(conn, collections))
        if not collection_ids:
            return []
        lexical: list[tuple[int, float]] = []
        semantic: list[tuple[int, float]] = []
        if mode is not SearchMode.SEMANTIC:
            lexical = await self._terms.best(collection_ids, query_terms(query), limit)
        if mode is not SearchMode.LEXICAL:
            semantic = await self._nearest(collection_ids, query, limit)
        ranked = (_fuse(lexical, semantic) if mode is SearchMode.HYBRID else lexical or semantic)[:limit]
        items = await self._store.read(lambda conn: search_queries.items_of(conn, [entry for entry, _ in ranked]))
        return [Hit(items[entry], score) for entry, score in ranked if entry in items]

    async def _nearest(self, collection_ids: list[int], query: str, limit: int) -> list[tuple[int, float]]:
        import numpy as np

        assert self.embedder is not None and self._vectors is not None
        embedder = self.embedder
        # Not behind the background batches' limiter: a search would wait up to a second for one.
        vector = await anyio.to_thread.run_sync(embedder.embed, [query])
        return await self._vectors.nearest(collection_ids, np.asarray(vector[0], dtype=np.float32), limit)

    async def queue_missing_embeddings(self) -> int:
        """Queue an embedding job for every indexed item without a vector of this hub's model: items indexed
        while the model was off or another one was on. How many were queued."""
        assert self.embedder is not None
        model, after, queued = self.embedder.model_id, 0, 0
        while True:
            page = await self._store.read(lambda conn: search_queries.unembedded(conn, model, after, BACKFILL_PAGE))
            if not page:
                return queued
            now = self._clock.now()

            def queue(conn: Connection) -> None:
                for _, item_id, key in page:
                    job_queries.ensure(conn, EMBED_JOB, item_id, {"corpus": key.split(":", 1)[0]}, now, now)

            await self._store.write(queue)
            queued += len(page)
            after = page[-1][0]

    def embedding_job(self) -> JobKind:
        """The background job that computes the vectors of newly indexed items, in batches."""
        return JobKind(EMBED_JOB, self._embed_jobs, batch=EMBED_BATCH, lease_seconds=120.0, max_attempts=3,
                       gather_seconds=EMBED_GATHER_SECONDS)

    async def _embed_jobs(self, work: Work) -> None:
        assert self.embedder is not None
        model = self.embedder.model_id
        by_corpus: dict[str, list[Job]] = defaultdict(list)
        for job in work.jobs:
            by_corpus[str(job.payload.get("corpus"))].append(job)
        for corpus, jobs in by_corpus.items():
            source = self._sources.get(corpus)
            subjects = [job.subject for job in jobs]
            texts = await self._store.read(lambda conn: source(conn, subjects)) if source is not None else {}
            present = [subject for subject in subjects if subject in texts]
            vectors = dict(zip(present, await self.embed([texts[subject] for subject in present]), strict=True))

            def store(conn: Connection, held: list[Job]) -> None:
                search_queries.store_vectors(conn, model, {job.subject: vectors[job.subject] for job in held
                                                           if job.subject in vectors})

            await work.complete(jobs, store)


def _lowered(niceness: int) -> None:
    """Lower the calling thread's OS priority (Linux counts niceness per thread; elsewhere, nothing)."""
    if niceness and sys.platform == "linux":
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def _fuse(lexical: list[tuple[int, float]], semantic: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Both rankings' scores relative to their best, averaged (an entry missing from one counts as its lowest)."""
    lexical_scores, semantic_scores = _relative(lexical), _relative(semantic)
    lexical_floor = min(lexical_scores.values(), default=0.0)
    semantic_floor = min(semantic_scores.values(), default=0.0)
    fused = {
        entry: LEXICAL_WEIGHT * lexical_scores.get(entry, lexical_floor)
        + (1 - LEXICAL_WEIGHT) * semantic_scores.get(entry, semantic_floor)
        for entry in lexical_scores.keys() | semantic_scores.keys()
    }
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))


def _relative(ranking: list[tuple[int, float]]) -> dict[int, float]:
    best = max((score for _, score in ranking), default=0.0)
    return {entry: score / best if best > 0 else 0.0 for entry, score in ranking}
