"""Agents and their profiles."""

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, exists, func, or_, select, update

from storage.schema import agent_tags, agents

from ._prepared import Prepared


def insert_agent(conn: Connection, row: dict[str, Any], tags: Sequence[str] = ()) -> None:
    conn.execute(agents.insert().values(**row))
    replace_tags(conn, row["id"], tags)


def replace_tags(conn: Connection, agent_id: str, tags: Sequence[str]) -> None:
    conn.execute(agent_tags.delete().where(agent_tags.c.agent_id == agent_id))
    if tags:
        conn.execute(
            agent_tags.insert(), [{"agent_id": agent_id, "tag": tag, "position": i} for i, tag in enumerate(tags)]
        )


# Prepared: every profile read (`agents.get`, `auth.whoami`, an MCP tool naming senders) runs these.
_tags_of = Prepared(
    select(agent_tags.c.agent_id, agent_tags.c.tag)
    .where(agent_tags.c.agent_id.in_(bindparam("p_agent_ids", expanding=True)))
    .order_by(agent_tags.c.agent_id, agent_tags.c.position)
)
_agent_by_id = Prepared(select(agents).where(agents.c.id == bindparam("p_id")))
_agent_by_handle = Prepared(select(agents).where(agents.c.handle == bindparam("p_handle")))


def tags_of(conn: Connection, agent_ids: Sequence[str]) -> dict[str, list[str]]:
    rows = _tags_of.all(conn, {"p_agent_ids": list(agent_ids)})
    found: dict[str, list[str]] = {agent_id: [] for agent_id in agent_ids}
    for agent_id, tag in rows:
        found[agent_id].append(tag)
    return found


def get_agent(conn: Connection, agent_id: str) -> Mapping[str, Any] | None:
    return _agent_by_id.mapping(conn, {"p_id": agent_id})


def get_agent_by_handle(conn: Connection, handle: str) -> Mapping[str, Any] | None:
    return _agent_by_handle.mapping(conn, {"p_handle": handle})


def handle_taken(conn: Connection, handle: str) -> bool:
    return conn.execute(select(exists().where(agents.c.handle == handle))).scalar_one()


def any_admin(conn: Connection) -> bool:
    return conn.execute(select(exists().where(agents.c.is_admin.is_(True)))).scalar_one()


def update_agent(conn: Connection, agent_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(agents).where(agents.c.id == agent_id).values(**values))


def bump_credential_epoch(conn: Connection, agent_id: str, values: dict[str, Any] | None = None) -> int:
    """Increment the agent's credential epoch (every token minted before is void); return the new one."""
    conn.execute(
        update(agents)
        .where(agents.c.id == agent_id)
        .values(credential_epoch=agents.c.credential_epoch + 1, **(values or {}))
    )
    return conn.execute(select(agents.c.credential_epoch).where(agents.c.id == agent_id)).scalar_one()


def search_public(
    conn: Connection, *, text: str | None, tag: str | None, after_handle: str | None, limit: int
) -> list[RowMapping]:
    """Public, unsuspended agents matching `text` (in handle, name, description) and `tag`, by handle."""
    query = select(agents).where(agents.c.visibility == "public", agents.c.suspended_at.is_(None))
    if text:
        pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                agents.c.handle.like(pattern, escape="\\"),
                func.lower(agents.c.display_name).like(pattern, escape="\\"),
                func.lower(agents.c.description).like(pattern, escape="\\"),
            )
        )
    if tag:
        query = query.where(
            exists().where(and_(agent_tags.c.agent_id == agents.c.id, agent_tags.c.tag == tag))
        )
    if after_handle is not None:
        query = query.where(agents.c.handle > after_handle)
    return list(conn.execute(query.order_by(agents.c.handle).limit(limit)).mappings())


def list_all(
    conn: Connection, *, suspended: bool | None, after_id: str | None, limit: int
) -> list[RowMapping]:
    query = select(agents)
    if suspended is not None:
        query = query.where(agents.c.suspended_at.isnot(None) if suspended else agents.c.suspended_at.is_(None))
    if after_id is not None:
        query = query.where(agents.c.id > after_id)
    return list(conn.execute(query.order_by(agents.c.id).limit(limit)).mappings())

