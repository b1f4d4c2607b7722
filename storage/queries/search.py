"""The search index: collections of entries (one per memory or document chunk), each with its terms
and, once computed, its vector.

A collection is what one search ranks over (an agent's private memories, a conversation's shared
ones, a document store). An entry keeps how often each of its terms occurs and its length, which is
all BM25 needs; ranking happens in memory (`hub/retrieval/terms.py`), from copies that follow the
store through the numbers kept here.

Entries and vectors are each numbered per collection as they are stored (`seq`, `vector_seq`, taken
under the collection row's lock, so in commit order): a cache of a collection loads only what was
numbered after the last it has, and re-reads which entries still exist only when its epoch
(`entry_epoch`, `vector_epoch`) says some were removed.
"""

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from storage.schema import search_collections, search_entries


def collection_ids(conn: Connection, keys: Collection[str]) -> list[int]:
    """The ids of those of `keys` that exist (a read: a collection nobody wrote to has nothing to find)."""
    return list(conn.execute(select(search_collections.c.id).where(search_collections.c.key.in_(keys))).scalars())


def add_entries(
    conn: Connection, key: str, items: Sequence[tuple[str, Mapping[str, int], int]], now: datetime
) -> None:
    """Index items in the collection named `key` (made, empty, if it does not exist yet): each item's id,
    term counts and length (terms in all), numbered in this order."""
    if not items:
        return
    grow = (update(search_collections).where(search_collections.c.key == key)
            .values(entries=search_collections.c.entries + len(items),
                    total_length=search_collections.c.total_length + sum(length for _, _, length in items),
                    entry_seq=search_collections.c.entry_seq + len(items))
            .returning(search_collections.c.id, search_collections.c.entry_seq))
    grown = conn.execute(grow).first()
    if grown is None:  # the collection's first entries
        conn.execute(insert(search_collections).values(key=key, entries=0, total_length=0, entry_epoch=0,
                                                       entry_seq=0, vector_epoch=0, vector_seq=0))
        grown = conn.execute(grow).one()
    collection, last = grown
    first = last - len(items) + 1
    conn.execute(insert(search_entries), [
        {"collection_id": collection, "item_id": item_id, "seq": first + number, "length": length,
         "terms": dict(counts), "created_at": now}
        for number, (item_id, counts, length) in enumerate(items)])


def remove_entry(conn: Connection, item_id: str) -> bool:
    """Remove an item's entry (its terms and its vector); False if it had none."""
    entry = conn.execute(
        select(search_entries.c.id, search_entries.c.collection_id, search_entries.c.length,
               search_entries.c.vector.is_not(None).label("embedded"))
        .where(search_entries.c.item_id == item_id)
    ).mappings().first()
    if entry is None:
        return False
    conn.execute(delete(search_entries).where(search_entries.c.id == entry["id"]))
    changes: dict[str, Any] = {"entries": search_collections.c.entries - 1,
                               "total_length": search_collections.c.total_length - entry["length"],
                               "entry_epoch": search_collections.c.entry_epoch + 1}  # cached terms must be pruned
    if entry["embedded"]:
        changes["vector_epoch"] = search_collections.c.vector_epoch + 1  # cached vectors too
    conn.execute(update(search_collections).where(search_collections.c.id == entry["collection_id"]).values(**changes))
    return True


# -- terms ----------------------------------------------------------------------------------------------------


def entry_positions(conn: Connection, collections: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(entry_epoch, entry_seq) of each collection."""
    query = select(search_collections.c.id, search_collections.c.entry_epoch, search_collections.c.entry_seq).where(
        search_collections.c.id.in_(collections))
    return {int(collection): (int(epoch), int(seq)) for collection, epoch, seq in conn.execute(query)}


def entries_after(conn: Connection, collection: int, after_seq: int) -> list[tuple[int, int, int, dict[str, int]]]:
    """(seq, entry id, length, term counts) of the collection's entries stored after `after_seq`, in order."""
    query = (
        select(search_entries.c.seq, search_entries.c.id, search_entries.c.length, search_entries.c.terms)
        .where(search_entries.c.collection_id == collection, search_entries.c.seq > after_seq)
        .order_by(search_entries.c.seq)
    )
    return [(int(seq), int(entry_id), int(length), terms) for seq, entry_id, length, terms in conn.execute(query)]


def entry_seqs(conn: Connection, collection: int) -> list[int]:
    """The numbers (`seq`) of the collection's entries."""
    query = select(search_entries.c.seq).where(search_entries.c.collection_id == collection)
    return [int(seq) for seq in conn.execute(query).scalars()]


def items_of(conn: Connection, entry_ids: Collection[int]) -> dict[int, str]:
    """The item id of each entry (entries removed meanwhile are left out)."""
    if not entry_ids:
        return {}
    query = select(search_entries.c.id, search_entries.c.item_id).where(search_entries.c.id.in_(entry_ids))
    return {int(entry_id): item_id for entry_id, item_id in conn.execute(query)}


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


def store_vectors(conn: Connection, model: str, vectors: Mapping[str, bytes]) -> int:
    """Store items' vectors (by item id), numbered next in their collections; how many items still had an
    entry (a vector of an item gone meanwhile is dropped)."""
    entries = conn.execute(select(search_entries.c.id, search_entries.c.item_id, search_entries.c.collection_id)
                           .where(search_entries.c.item_id.in_(list(vectors))).order_by(search_entries.c.id)).all()
    by_collection: dict[int, list[tuple[int, str]]] = {}
    for entry_id, item_id, collection in entries:
        by_collection.setdefault(collection, []).append((entry_id, item_id))
    changes = []
    for collection, found in by_collection.items():
        last = int(conn.execute(
            update(search_collections).where(search_collections.c.id == collection)
            .values(vector_seq=search_collections.c.vector_seq + len(found)).returning(search_collections.c.vector_seq)
        ).scalar_one())
        changes += [{"entry": entry_id, "vector": vectors[item_id], "vector_model": model,
                     "vector_seq": last - len(found) + number + 1}
                    for number, (entry_id, item_id) in enumerate(found)]
    if changes:
        conn.execute(update(search_entries).where(search_entries.c.id == bindparam("entry")), changes)
    return len(changes)
