"""Blocks: one agent blocking another agent or a conversation."""

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, Select, bindparam, delete, exists, or_, select

from storage.schema import blocks, conversation_members

from ._prepared import Prepared


def insert_block(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(blocks.insert().values(**row))


def get_block(conn: Connection, block_id: str) -> RowMapping | None:
    return conn.execute(select(blocks).where(blocks.c.id == block_id)).mappings().first()


def find_agent_block(conn: Connection, agent_id: str, blocked_agent_id: str) -> RowMapping | None:
    return conn.execute(
        select(blocks).where(blocks.c.agent_id == agent_id, blocks.c.blocked_agent_id == blocked_agent_id)
    ).mappings().first()


_conversation_block = Prepared(select(blocks).where(  # every `messages.mark_read` runs it
    blocks.c.agent_id == bindparam("p_agent_id"), blocks.c.blocked_conversation_id == bindparam("p_conversation_id")
))


def find_conversation_block(conn: Connection, agent_id: str, conversation_id: str) -> Mapping[str, Any] | None:
    return _conversation_block.mapping(conn, {"p_agent_id": agent_id, "p_conversation_id": conversation_id})


# Prepared: it runs for every page of `conversations.list` and every `conversations.get`.
_blocks_for_view = Prepared(select(blocks.c.blocked_agent_id, blocks.c.blocked_conversation_id).where(
    blocks.c.agent_id == bindparam("agent_id"),
    or_(blocks.c.blocked_agent_id.isnot(None),
        blocks.c.blocked_conversation_id.in_(bindparam("conversation_ids", expanding=True))),
))


def blocks_for_view(conn: Connection, agent_id: str, conversation_ids: Collection[str]) -> tuple[set[str], set[str]]:
    """In one query: the agents `agent_id` blocks (what `blocked_by` selects), and which of
    `conversation_ids` it blocks."""
    rows = _blocks_for_view.all(conn, {"agent_id": agent_id, "conversation_ids": list(conversation_ids)})
    return ({agent for agent, _ in rows if agent is not None},
            {conversation for _, conversation in rows if conversation is not None})


def delete_block(conn: Connection, block_id: str) -> None:
    conn.execute(delete(blocks).where(blocks.c.id == block_id))


def list_blocks(conn: Connection, agent_id: str, *, after_id: str | None, limit: int) -> list[RowMapping]:
    query = select(blocks).where(blocks.c.agent_id == agent_id)
    if after_id is not None:
        query = query.where(blocks.c.id > after_id)
    return list(conn.execute(query.order_by(blocks.c.id).limit(limit)).mappings())


_blocks_agent = Prepared(select(
    exists().where(blocks.c.agent_id == bindparam("p_agent_id"), blocks.c.blocked_agent_id == bindparam("p_other_id"))
))


def blocks_agent(conn: Connection, agent_id: str, other_id: str) -> bool:
    """Whether `agent_id` blocks `other_id`."""
    return bool(_blocks_agent.scalar(conn, {"p_agent_id": agent_id, "p_other_id": other_id}))


_blocked_by_other_member = Prepared(
    select(exists().where(
        conversation_members.c.conversation_id == bindparam("p_conversation_id"),
        conversation_members.c.agent_id != bindparam("p_agent_id"),
        blocks.c.agent_id == conversation_members.c.agent_id,
        blocks.c.blocked_agent_id == bindparam("p_agent_id"),
    ))
)


def blocked_by_other_member(conn: Connection, conversation_id: str, agent_id: str) -> bool:
    """Whether another member (current or past) of the conversation blocks `agent_id`."""
    return bool(_blocked_by_other_member.scalar(conn, {"p_conversation_id": conversation_id, "p_agent_id": agent_id}))


def blocked_by(agent_id: str | ColumnElement[str]) -> Select[tuple[str | None]]:
    """The agents `agent_id` (a value, or a bind parameter) blocks, as a subquery for `NOT IN`."""
    return select(blocks.c.blocked_agent_id).where(
        blocks.c.agent_id == agent_id, blocks.c.blocked_agent_id.isnot(None)
    )


