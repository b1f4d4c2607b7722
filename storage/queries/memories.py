"""Memories, their versions and tags, and what each agent's memories weigh."""

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, and_, delete, func, insert, or_, select, update

from storage.schema import memories, memory_tags, memory_versions, search_entries

from .blocks import blocked_by


def get(conn: Connection, memory_id: str) -> RowMapping | None:
    return conn.execute(select(memories).where(memories.c.id == memory_id)).mappings().first()


def find_by_content(conn: Connection, scope_id: str, content_key: str) -> RowMapping | None:
    return conn.execute(
        select(memories).where(memories.c.scope_id == scope_id, memories.c.content_key == content_key)
    ).mappings().first()


def insert_memory(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(memories).values(**row))
    set_tags(conn, row["id"], row["tags"], replace=False)


def update_memory(conn: Connection, memory_id: str, changes: dict[str, Any]) -> None:
    conn.execute(update(memories).where(memories.c.id == memory_id).values(**changes))
    if "tags" in changes:
        set_tags(conn, memory_id, changes["tags"], replace=True)


def set_tags(conn: Connection, memory_id: str, tags: Sequence[str], *, replace: bool) -> None:
    if replace:
        conn.execute(delete(memory_tags).where(memory_tags.c.memory_id == memory_id))
    if tags:
        conn.execute(insert(memory_tags), [{"memory_id": memory_id, "tag": tag} for tag in tags])


def delete_memory(conn: Connection, memory_id: str) -> None:
    """The row; its versions and tags go with it (foreign keys cascade, on SQLite too)."""
    conn.execute(delete(memories).where(memories.c.id == memory_id))


def insert_version(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(memory_versions).values(**row))


def versions(conn: Connection, memory_id: str, *, before: int | None, limit: int) -> list[RowMapping]:
    """Versions of a memory, newest first, below `before` if given."""
    query = select(memory_versions).where(memory_versions.c.memory_id == memory_id)
    if before is not None:
        query = query.where(memory_versions.c.version < before)
    return list(conn.execute(query.order_by(memory_versions.c.version.desc()).limit(limit)).mappings())


def filters(
    *, category: str | None = None, tags: Sequence[str] = (), archived: bool | None = False, pinned: bool | None = None,
    min_importance: int | None = None, hidden_for: str | None = None,
) -> list[ColumnElement[bool]]:
    """Conditions on memories: `archived` None means either; with `hidden_for`, memories by authors that
    agent blocks are left out."""
    conditions: list[ColumnElement[bool]] = []
    if category is not None:
        conditions.append(memories.c.category == category)
    for tag in tags:
        conditions.append(memories.c.id.in_(select(memory_tags.c.memory_id).where(memory_tags.c.tag == tag)))
    if archived is not None:
        conditions.append(memories.c.archived_at.is_not(None) if archived else memories.c.archived_at.is_(None))
    if pinned is not None:
        conditions.append(memories.c.pinned == pinned)
    if min_importance is not None:
        conditions.append(memories.c.importance >= min_importance)
    if hidden_for is not None:
        conditions.append(memories.c.author_id.not_in(blocked_by(hidden_for).scalar_subquery()))
    return conditions


def page(
    conn: Connection, scope_id: str, conditions: Sequence[ColumnElement[bool]], *, by_importance: bool,
    after: tuple[Any, ...] | None, limit: int,
) -> list[RowMapping]:
    """A page of a scope's memories: newest change first, or most important (then newest) first; keyset
    `after` is the last row's (updated_at, id) or (importance, updated_at, id)."""
    order = ([memories.c.importance.desc()] if by_importance else []) + [memories.c.updated_at.desc(),
                                                                          memories.c.id.desc()]
    query = select(memories).where(memories.c.scope_id == scope_id, *conditions)
    if after is not None:
        if by_importance:
            importance, updated_at, last_id = after
            query = query.where(or_(
                memories.c.importance < importance,
                and_(memories.c.importance == importance, memories.c.updated_at < updated_at),
                and_(memories.c.importance == importance, memories.c.updated_at == updated_at, memories.c.id < last_id),
            ))
        else:
            updated_at, last_id = after
            query = query.where(or_(memories.c.updated_at < updated_at,
                                    and_(memories.c.updated_at == updated_at, memories.c.id < last_id)))
    return list(conn.execute(query.order_by(*order).limit(limit)).mappings())


def of_ids(conn: Connection, memory_ids: Collection[str], scope_ids: Collection[str],
           conditions: Sequence[ColumnElement[bool]]) -> dict[str, RowMapping]:
    """Those of `memory_ids` in `scope_ids` that meet `conditions`, by id.

    The scope is checked here, not in the SQL: a condition on `scope_id` can lead a planner without
    statistics to scan the scope's index (every memory in it) rather than look up the ids (measured:
    16 ms against 0.3 ms for 50 ids in a scope of 100,000).
    """
    if not memory_ids:
        return {}
    query = select(memories).where(memories.c.id.in_(memory_ids), *conditions)
    return {row["id"]: row for row in conn.execute(query).mappings() if row["scope_id"] in scope_ids}


def contents(conn: Connection, memory_ids: Sequence[str]) -> dict[str, str]:
    """The current content of those of `memory_ids` that exist (what the embedding job embeds)."""
    query = select(memories.c.id, memories.c.content).where(memories.c.id.in_(memory_ids))
    return {memory_id: content for memory_id, content in conn.execute(query)}


def pinned_of(conn: Connection, scope_id: str, limit: int) -> list[RowMapping]:
    query = (select(memories).where(memories.c.scope_id == scope_id, memories.c.pinned.is_(True),
                                    memories.c.archived_at.is_(None))
             .order_by(memories.c.importance.desc(), memories.c.updated_at.desc()).limit(limit))
    return list(conn.execute(query).mappings())


def counts(conn: Connection, scope_ids: Collection[str]) -> list[RowMapping]:
    """How many memories in each (scope, scope id, category, archived)."""
    archived = memories.c.archived_at.is_not(None).label("archived")
    query = (
        select(memories.c.scope, memories.c.scope_id, memories.c.category, archived, func.count().label("count"))
        .where(memories.c.scope_id.in_(scope_ids))
        .group_by(memories.c.scope, memories.c.scope_id, memories.c.category, archived)
        .order_by(memories.c.scope, memories.c.scope_id, memories.c.category, archived)
    )
    return list(conn.execute(query).mappings())


def count_embedded(conn: Connection, scope_ids: Collection[str], model: str) -> int:
    query = (
        select(func.count())
        .select_from(memories.join(search_entries, search_entries.c.item_id == memories.c.id))
        .where(memories.c.scope_id.in_(scope_ids), search_entries.c.vector_model == model)
    )
    return int(conn.execute(query).scalar_one())
