"""Blocks: one agent blocking another agent or a conversation."""

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, RowMapping, Select, delete, exists, or_, select

from storage.schema import blocks


def insert_block(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(blocks.insert().values(**row))


def get_block(conn: Connection, block_id: str) -> RowMapping | None:
    return conn.execute(select(blocks).where(blocks.c.id == block_id)).mappings().first()


def find_agent_block(conn: Connection, agent_id: str, blocked_agent_id: str) -> RowMapping | None:
    return conn.execute(
        select(blocks).where(blocks.c.agent_id == agent_id, blocks.c.blocked_agent_id == blocked_agent_id)
    ).mappings().first()


def find_conversation_block(conn: Connection, agent_id: str, conversation_id: str) -> RowMapping | None:
    return conn.execute(
        select(blocks).where(blocks.c.agent_id == agent_id, blocks.c.blocked_conversation_id == conversation_id)
    ).mappings().first()


def delete_block(conn: Connection, block_id: str) -> None:
    conn.execute(delete(blocks).where(blocks.c.id == block_id))


def list_blocks(conn: Connection, agent_id: str, *, after_id: str | None, limit: int) -> list[RowMapping]:
    query = select(blocks).where(blocks.c.agent_id == agent_id)
    if after_id is not None:
        query = query.where(blocks.c.id > after_id)
    return list(conn.execute(query.order_by(blocks.c.id).limit(limit)).mappings())


def blocks_agent(conn: Connection, agent_id: str, other_id: str) -> bool:
    """Whether `agent_id` blocks `other_id`."""
    return conn.execute(
        select(exists().where(blocks.c.agent_id == agent_id, blocks.c.blocked_agent_id == other_id))
    ).scalar_one()


def blocked_by(agent_id: str) -> Select[tuple[str | None]]:
    """The agents `agent_id` blocks, as a subquery for `NOT IN`."""
    return select(blocks.c.blocked_agent_id).where(
        blocks.c.agent_id == agent_id, blocks.c.blocked_agent_id.isnot(None)
    )


def blocking(
    conn: Connection, agent_ids: Collection[str], *, agent_id: str | None = None, conversation_id: str | None = None
) -> set[str]:
    """Which of `agent_ids` block the agent `agent_id` or the conversation `conversation_id`."""
    conditions = []
    if agent_id is not None:
        conditions.append(blocks.c.blocked_agent_id == agent_id)
    if conversation_id is not None:
        conditions.append(blocks.c.blocked_conversation_id == conversation_id)
    if not agent_ids or not conditions:
        return set()
    rows = conn.execute(select(blocks.c.agent_id).where(blocks.c.agent_id.in_(agent_ids), or_(*conditions)))
    return set(rows.scalars())
