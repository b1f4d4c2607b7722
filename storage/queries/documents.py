"""The document store: documents, their passages, each store's ingestion round, and the audit log."""

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, case, delete, func, insert, null, select, update

from storage.schema import document_audit, document_chunks, document_stores, documents, search_entries

from ._prepared import Prepared, PreparedUpsert
from .blocks import blocked_by


def insert_document(conn: Connection, row: dict[str, Any]) -> None:
    _insert_document.execute(conn, row).close()


# Prepared: they run for every document added (see storage/queries/_prepared.py).
_insert_document = Prepared(insert(documents), column_keys=[column.key for column in documents.c])
_title_of = Prepared(select(documents.c.title).where(documents.c.id == bindparam("document_id")))


def get_document(conn: Connection, document_id: str) -> RowMapping | None:
    return conn.execute(select(documents).where(documents.c.id == document_id)).mappings().first()


def title_of(conn: Connection, document_id: str) -> str | None:
    """The document's title; None when it has none, or is gone."""
    return _title_of.scalar(conn, {"document_id": document_id})


def documents_by_id(conn: Connection, document_ids: Sequence[str]) -> dict[str, RowMapping]:
    """Those of the documents that exist, by id."""
    rows = conn.execute(select(documents).where(documents.c.id.in_(document_ids))).mappings()
    return {row["id"]: row for row in rows}


def update_document(conn: Connection, document_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(documents).where(documents.c.id == document_id).values(**values))


def update_documents(conn: Connection, changes: Sequence[dict[str, Any]]) -> None:
    """Change several documents in one statement: each of `changes` names its `document_id` and sets the
    same columns as the others."""
    if changes:
        conn.execute(update(documents).where(documents.c.id == bindparam("document_id")), list(changes))


def delete_document(conn: Connection, document_id: str) -> None:
    """The document; its passages go with it."""
    conn.execute(delete(documents).where(documents.c.id == document_id))


def documents_of(conn: Connection, scope_id: str, reader_id: str, *, state: str | None, after_id: str | None,
                 limit: int) -> list[RowMapping]:
    """A store's documents, newest first, but those added by an agent the reader blocks."""
    query = select(documents).where(documents.c.scope_id == scope_id,
                                    documents.c.added_by.not_in(blocked_by(reader_id).scalar_subquery()))
    if state is not None:
        query = query.where(documents.c.state == state)
    if after_id is not None:
        query = query.where(documents.c.id < after_id)
    return list(conn.execute(query.order_by(documents.c.id.desc()).limit(limit)).mappings())


def summary(conn: Connection, scope_ids: Collection[str]) -> RowMapping:
    """Counts by state and exclusion, passages and source bytes of the stores' documents."""
    query = select(
        func.count().label("documents"),
        func.count().filter(documents.c.state == "ready").label("ready"),
        func.count().filter(documents.c.excluded.is_(True)).label("excluded"),
        func.count().filter(documents.c.state == "failed").label("failed"),
        func.count().filter(documents.c.state.in_(["queued", "processing"])).label("in_progress"),
        func.coalesce(func.sum(documents.c.passages), 0).label("passages"),
        func.coalesce(func.sum(documents.c.size), 0).label("bytes"),
    ).where(documents.c.scope_id.in_(scope_ids))
    return conn.execute(query).mappings().one()


# -- passages ---------------------------------------------------------------------------------------


def count_embedded(conn: Connection, scope_ids: Collection[str], model: str) -> int:
    query = (
        select(func.count())
        .select_from(document_chunks.join(documents, documents.c.id == document_chunks.c.document_id)
                     .join(search_entries, search_entries.c.item_id == document_chunks.c.id))
        .where(documents.c.scope_id.in_(scope_ids), search_entries.c.vector_model == model)
    )
    return int(conn.execute(query).scalar_one())


def insert_passages(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(document_chunks), list(rows))


def passage_ids_of(conn: Connection, document_ids: Sequence[str]) -> list[str]:
    return list(conn.execute(select(document_chunks.c.id).where(document_chunks.c.document_id.in_(document_ids)))
                .scalars())


def delete_passages(conn: Connection, document_ids: Sequence[str]) -> None:
    conn.execute(delete(document_chunks).where(document_chunks.c.document_id.in_(document_ids)))


def passages_of_document(conn: Connection, document_id: str) -> list[RowMapping]:
    query = select(document_chunks).where(document_chunks.c.document_id == document_id).order_by(
        document_chunks.c.idx)
    return list(conn.execute(query).mappings())


def passage_texts(conn: Connection, passage_ids: Sequence[str]) -> dict[str, str]:
    """The text of those of `passage_ids` that exist (what the embedding job embeds)."""
    query = select(document_chunks.c.id, document_chunks.c.text).where(document_chunks.c.id.in_(passage_ids))
    return {passage_id: text for passage_id, text in conn.execute(query)}


def searchable_passages(conn: Connection, passage_ids: Collection[str], scope_ids: Collection[str],
                        document_ids: Collection[str] | None, reader_id: str) -> dict[str, dict[str, Any]]:
    """Those of `passage_ids` a reader may find: of a ready, included document in `scope_ids` (and in
    `document_ids`, if given), not added by an agent the reader blocks; with the document's title.

    Two lookups by primary key, not a join: right after a bulk ingestion PostgreSQL's statistics still
    say the tables are empty, and it then probed the passages once per document (seconds a search)."""
    if not passage_ids:
        return {}
    passages = conn.execute(select(document_chunks).where(document_chunks.c.id.in_(passage_ids))).mappings().all()
    wanted = {row["document_id"] for row in passages}
    if document_ids is not None:
        wanted &= set(document_ids)
    if not wanted:
        return {}
    searchable = {
        row["id"]: row for row in conn.execute(
            select(documents.c.id, documents.c.title, documents.c.scope_id)
            .where(documents.c.id.in_(wanted), documents.c.scope_id.in_(scope_ids), documents.c.state == "ready",
                   documents.c.excluded.is_(False),
                   documents.c.added_by.not_in(blocked_by(reader_id).scalar_subquery()))
        ).mappings()
    }
    return {passage["id"]: {**passage, "title": searchable[passage["document_id"]]["title"],
                            "scope_id": searchable[passage["document_id"]]["scope_id"]}
            for passage in passages if passage["document_id"] in searchable}


# -- ingestion rounds -----------------------------------------------------------------------------


def store_round(conn: Connection, scope_id: str) -> RowMapping | None:
    return conn.execute(select(document_stores).where(document_stores.c.scope_id == scope_id)).mappings().first()


def round_added(conn: Connection, scope_id: str, count: int, now: datetime) -> dict[str, Any]:
    """`count` documents queued: a new round if the last one is over, else more in this one. The round."""
    row = _round_added.on(conn).mapping(conn, {"scope_id": scope_id, "count": count, "now": now})
    assert row is not None
    return row


def _build_round_added(dialect_insert: Any) -> Any:
    count = bindparam("count", type_=document_stores.c.round_total.type)
    fresh = {"round_total": count, "round_done": 0, "round_failed": 0,
             "round_started_at": bindparam("now", type_=document_stores.c.round_started_at.type),
             "current_document_id": null()}
    statement = dialect_insert(document_stores).values(scope_id=bindparam("scope_id"), **fresh)
    over = document_stores.c.round_done >= document_stores.c.round_total
    # Every SET expression reads the row as it was, so `over` means the same in each.
    kept = {name: case((over, value), else_=document_stores.c[name]) for name, value in fresh.items()}
    kept["round_total"] = case((over, count), else_=document_stores.c.round_total + count)
    return (statement.on_conflict_do_update(index_elements=[document_stores.c.scope_id], set_=kept)
            .returning(*document_stores.c))


_round_added = PreparedUpsert(_build_round_added)


def round_working_on(conn: Connection, scope_id: str, document_id: str | None) -> None:
    conn.execute(update(document_stores).where(document_stores.c.scope_id == scope_id)
                 .values(current_document_id=document_id))


def round_done(conn: Connection, scope_id: str, *, done: int, failed: int) -> None:
    """`done` more documents of the round ended, `failed` of them failed."""
    conn.execute(update(document_stores).where(document_stores.c.scope_id == scope_id).values(
        round_done=document_stores.c.round_done + done, round_failed=document_stores.c.round_failed + failed,
        current_document_id=None))


def round_dropped(conn: Connection, scope_id: str) -> None:
    """A queued document was deleted before its turn: the round counts it as done."""
    conn.execute(update(document_stores).where(document_stores.c.scope_id == scope_id).values(
        round_done=document_stores.c.round_done + 1))


# -- the audit log --------------------------------------------------------------------------------


def audit(conn: Connection, scope_id: str, document_id: str, action: str, actor_id: str | None, at: datetime,
          details: dict[str, Any] | None = None) -> None:
    audit_entries(conn, [{"scope_id": scope_id, "document_id": document_id, "action": action, "actor_id": actor_id,
                          "at": at, "details": details or {}}])


def audit_entries(conn: Connection, entries: Sequence[dict[str, Any]]) -> None:
    """Several audit entries (each with every column of `audit`'s), in one statement."""
    if entries:
        conn.execute(insert(document_audit), list(entries))


def audit_page(conn: Connection, scope_id: str, document_id: str | None, *, before: int | None,
               limit: int) -> list[RowMapping]:
    query = select(document_audit).where(document_audit.c.scope_id == scope_id)
    if document_id is not None:
        query = query.where(document_audit.c.document_id == document_id)
    if before is not None:
        query = query.where(document_audit.c.id < before)
    return list(conn.execute(query.order_by(document_audit.c.id.desc()).limit(limit)).mappings())
