"""The search index: collections of entries (one per memory or document chunk), their terms for BM25,
and their vectors.

A collection is what one search ranks over (an agent's private memories, a conversation's shared
ones, a document store); BM25's statistics are the collection's. Postings are keyed by
(collection, term, entry), so a term's list within a collection is one index range, and each posting
carries the entry's length, so scoring needs no join. An entry keeps the list of its distinct terms,
so removing it deletes exactly its postings, whatever the analyzer does by then.

Vectors are numbered per collection as they are stored (`vector_seq`, taken under the collection
row's lock, so in commit order): a cache of a collection's vectors loads only those numbered after
the last it has, and re-reads which entries still exist only when `vector_epoch` says some were
removed.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, RowMapping, case, delete, func, insert, literal, select, update

from storage.schema import search_collections, search_entries, search_postings

K1: Final = 1.2
B: Final = 0.75
"""BM25's usual parameters (those of SQLite FTS5 and Lucene)."""


def collection_id(conn: Connection, key: str) -> int:
    """The id of the collection named `key`, created (empty) if it does not exist yet. In a write."""
    found = conn.execute(select(search_collections.c.id).where(search_collections.c.key == key)).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(
        insert(search_collections).values(key=key, entries=0, total_length=0, vector_epoch=0, vector_seq=0)
        .returning(search_collections.c.id)
    ).scalar_one())


def collection_ids(conn: Connection, keys: Collection[str]) -> list[int]:
    """The ids of those of `keys` that exist (a read: a collection nobody wrote to has nothing to find)."""
    return list(conn.execute(select(search_collections.c.id).where(search_collections.c.key.in_(keys))).scalars())


def add_entry(
    conn: Connection, collection: int, item_id: str, counts: Mapping[str, int], length: int, now: datetime
) -> int:
    """Index an item's terms (`counts`, `length` terms in all); returns the entry id."""
    entry_id = int(conn.execute(
        insert(search_entries).values(collection_id=collection, item_id=item_id, length=length,
                                      terms=sorted(counts), created_at=now)
        .returning(search_entries.c.id)
    ).scalar_one())
    if counts:
        conn.execute(insert(search_postings), [
            {"collection_id": collection, "term": term, "entry_id": entry_id, "tf": tf, "length": length}
            for term, tf in counts.items()
        ])
    conn.execute(update(search_collections).where(search_collections.c.id == collection).values(
        entries=search_collections.c.entries + 1, total_length=search_collections.c.total_length + length))
    return entry_id


def remove_entry(conn: Connection, item_id: str) -> bool:
    """Remove an item's entry, its postings and its vector; False if it had none."""
    entry = conn.execute(
        select(search_entries.c.id, search_entries.c.collection_id, search_entries.c.length, search_entries.c.terms,
               search_entries.c.vector.is_not(None).label("embedded"))
        .where(search_entries.c.item_id == item_id)
    ).mappings().first()
    if entry is None:
        return False
    if entry["terms"]:
        conn.execute(delete(search_postings).where(
            search_postings.c.collection_id == entry["collection_id"], search_postings.c.term.in_(entry["terms"]),
            search_postings.c.entry_id == entry["id"]))
    conn.execute(delete(search_entries).where(search_entries.c.id == entry["id"]))
    changes: dict[str, Any] = {"entries": search_collections.c.entries - 1,
                               "total_length": search_collections.c.total_length - entry["length"]}
    if entry["embedded"]:
        changes["vector_epoch"] = search_collections.c.vector_epoch + 1  # cached vectors must be reloaded
    conn.execute(update(search_collections).where(search_collections.c.id == entry["collection_id"]).values(**changes))
    return True


def statistics(conn: Connection, collections: Sequence[int]) -> tuple[int, int]:
    """(entries, total length in terms) of the collections together."""
    row = conn.execute(
        select(func.coalesce(func.sum(search_collections.c.entries), 0),
               func.coalesce(func.sum(search_collections.c.total_length), 0))
        .where(search_collections.c.id.in_(collections))
    ).one()
    return int(row[0]), int(row[1])


@dataclass(frozen=True)
class TermStatistics:
    entries: int
    """How many entries hold the term (its document frequency)."""
    max_tf: int
    min_length: int
    """Of the entries holding it: together they bound what the term can add to any entry's score."""


def term_statistics(conn: Connection, collections: Sequence[int], terms: Sequence[str]) -> dict[str, TermStatistics]:
    """Statistics of each of `terms` in the collections (terms no entry holds are left out)."""
    query = (
        select(search_postings.c.term, func.count(), func.max(search_postings.c.tf),
               func.min(search_postings.c.length))
        .where(search_postings.c.collection_id.in_(collections), search_postings.c.term.in_(terms))
        .group_by(search_postings.c.term)
    )
    return {term: TermStatistics(int(count), int(max_tf), int(min_length))
            for term, count, max_tf, min_length in conn.execute(query)}


def bm25(
    conn: Connection, collections: Sequence[int], weights: Mapping[str, float], average_length: float, limit: int,
    *, among: Sequence[str] | None = None,
) -> list[tuple[int, float]]:
    """The `limit` best entries by BM25 for query terms weighted by their idf: (entry id, score), best first.

    score = Σ idf(t) · tf·(k1 + 1) / (tf + k1·(1 − b + b·length/avg_length)), over the query's terms.
    With `among`, only entries holding one of those terms are ranked (scored on every term all the same).
    """
    if not weights:
        return []
    idf = case(*((search_postings.c.term == term, literal(weight)) for term, weight in weights.items()), else_=0.0)
    tf = search_postings.c.tf * 1.0
    norm = K1 * (1.0 - B + B * search_postings.c.length / max(average_length, 1e-9))
    score = func.sum(idf * tf * (K1 + 1.0) / (tf + norm)).label("score")
    query = (
        select(search_postings.c.entry_id, score)
        .where(search_postings.c.collection_id.in_(collections), search_postings.c.term.in_(list(weights)))
        .group_by(search_postings.c.entry_id)
        .order_by(score.desc(), search_postings.c.entry_id)
        .limit(limit)
    )
    if among is not None:
        candidates = select(search_postings.c.entry_id).where(
            search_postings.c.collection_id.in_(collections), search_postings.c.term.in_(among))
        query = query.where(search_postings.c.entry_id.in_(candidates))
    return [(int(entry_id), float(value)) for entry_id, value in conn.execute(query)]


def items_of(conn: Connection, entry_ids: Collection[int]) -> dict[int, str]:
    """The item id of each entry (entries removed meanwhile are left out)."""
    if not entry_ids:
        return {}
    query = select(search_entries.c.id, search_entries.c.item_id).where(search_entries.c.id.in_(entry_ids))
    return {int(entry_id): item_id for entry_id, item_id in conn.execute(query)}


def entry_of(conn: Connection, item_id: str) -> RowMapping | None:
    return conn.execute(
        select(search_entries.c.id, search_entries.c.collection_id, search_entries.c.vector_model)
        .where(search_entries.c.item_id == item_id)
    ).mappings().first()


# -- vectors ------------------------------------------------------------------------------------------------


def vector_positions(conn: Connection, collections: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(vector_epoch, vector_seq) of each collection."""
    query = select(search_collections.c.id, search_collections.c.vector_epoch, search_collections.c.vector_seq).where(
        search_collections.c.id.in_(collections))
    return {int(collection): (int(epoch), int(seq)) for collection, epoch, seq in conn.execute(query)}


def embedded_entries(conn: Connection, collection: int, model: str) -> list[int]:
    """The ids of the collection's entries that have a vector of `model`."""
    query = select(search_entries.c.id).where(search_entries.c.collection_id == collection,
                                               search_entries.c.vector_model == model)
    return [int(entry_id) for entry_id in conn.execute(query).scalars()]


def vectors_after(conn: Connection, collection: int, model: str, after_seq: int) -> list[tuple[int, int, bytes]]:
    """(vector_seq, entry id, vector) of `model`'s vectors stored in the collection after `after_seq`, in order."""
    query = (
        select(search_entries.c.vector_seq, search_entries.c.id, search_entries.c.vector)
        .where(search_entries.c.collection_id == collection, search_entries.c.vector_seq > after_seq,
               search_entries.c.vector_model == model)
        .order_by(search_entries.c.vector_seq)
    )
    return [(int(seq), int(entry_id), bytes(vector)) for seq, entry_id, vector in conn.execute(query)]


def unembedded(conn: Connection, model: str, after_entry: int, limit: int) -> list[tuple[int, str, str]]:
    """(entry id, item id, collection key) of entries with no vector of `model`, after `after_entry`, in id order."""
    query = (
        select(search_entries.c.id, search_entries.c.item_id, search_collections.c.key)
        .join(search_collections, search_collections.c.id == search_entries.c.collection_id)
        .where(search_entries.c.id > after_entry,
               (search_entries.c.vector_model.is_(None)) | (search_entries.c.vector_model != model))
        .order_by(search_entries.c.id)
        .limit(limit)
    )
    return [(int(entry_id), item_id, key) for entry_id, item_id, key in conn.execute(query)]


def store_vector(conn: Connection, entry_id: int, model: str, vector: bytes) -> bool:
    """Store an entry's vector, numbered next in its collection; False if the entry is gone."""
    collection = conn.execute(select(search_entries.c.collection_id).where(search_entries.c.id == entry_id)).scalar()
    if collection is None:
        return False
    seq = int(conn.execute(
        update(search_collections).where(search_collections.c.id == collection)
        .values(vector_seq=search_collections.c.vector_seq + 1).returning(search_collections.c.vector_seq)
    ).scalar_one())
    conn.execute(update(search_entries).where(search_entries.c.id == entry_id)
                 .values(vector=vector, vector_model=model, vector_seq=seq))
    return True
