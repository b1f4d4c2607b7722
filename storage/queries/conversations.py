"""Conversations and their members."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, func, or_, select, update

from storage.schema import agents, conversation_members, conversations

_member_columns = (
    conversation_members.c.role,
    conversation_members.c.joined_at,
    conversation_members.c.joined_seq,
    conversation_members.c.last_read_seq,
)


def insert_conversation(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(conversations.insert().values(**row))


def get_conversation(conn: Connection, conversation_id: str) -> RowMapping | None:
    return conn.execute(select(conversations).where(conversations.c.id == conversation_id)).mappings().first()


def find_direct(conn: Connection, direct_key: str) -> RowMapping | None:
    return conn.execute(select(conversations).where(conversations.c.direct_key == direct_key)).mappings().first()


def next_seq(conn: Connection, conversation_id: str) -> int:
    """Take the conversation's next `seq` inside the caller's transaction.

    The row is locked first (`SELECT … FOR UPDATE` on PostgreSQL; SQLite's writer holds the
    database lock already), so concurrent senders are serialized on the counter and the sequence
    has neither duplicates nor holes: a rolled-back send rolls its increment back with it.
    """
    current = conn.execute(
        select(conversations.c.last_seq).where(conversations.c.id == conversation_id).with_for_update()
    ).scalar_one()
    seq = int(current) + 1
    conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(last_seq=seq))
    return seq


def set_activity(conn: Connection, conversation_id: str, activity: int, at: datetime) -> None:
    conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(activity=activity, last_activity_at=at)
    )


def update_conversation(conn: Connection, conversation_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(**values))


def insert_members(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(conversation_members.insert(), list(rows))


def get_member(conn: Connection, conversation_id: str, agent_id: str) -> RowMapping | None:
    """The membership row, whether the agent is still a member (`left_at` null) or not."""
    return conn.execute(
        select(conversation_members).where(
            conversation_members.c.conversation_id == conversation_id, conversation_members.c.agent_id == agent_id
        )
    ).mappings().first()


def update_member(conn: Connection, conversation_id: str, agent_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(conversation_members)
        .where(conversation_members.c.conversation_id == conversation_id, conversation_members.c.agent_id == agent_id)
        .values(**values)
    )


def advance_read_marker(conn: Connection, conversation_id: str, agent_id: str, seq: int) -> bool:
    """Move the member's read marker up to `seq`; False when it already was there or beyond."""
    result = conn.execute(
        update(conversation_members)
        .where(
            conversation_members.c.conversation_id == conversation_id,
            conversation_members.c.agent_id == agent_id,
            conversation_members.c.last_read_seq < seq,
        )
        .values(last_read_seq=seq)
    )
    return result.rowcount == 1


def active_members(conn: Connection, conversation_id: str) -> list[RowMapping]:
    """Current members with their handles, oldest first."""
    return list(
        conn.execute(
            select(conversation_members, agents.c.handle)
            .join(agents, agents.c.id == conversation_members.c.agent_id)
            .where(conversation_members.c.conversation_id == conversation_id, conversation_members.c.left_at.is_(None))
            .order_by(conversation_members.c.joined_at, conversation_members.c.agent_id)
        ).mappings()
    )


def active_member_ids(conn: Connection, conversation_id: str, *, seen_seq: int | None = None) -> list[str]:
    """Current members' ids; with `seen_seq`, only those who joined at or before that seq."""
    query = select(conversation_members.c.agent_id).where(
        conversation_members.c.conversation_id == conversation_id, conversation_members.c.left_at.is_(None)
    )
    if seen_seq is not None:
        query = query.where(conversation_members.c.joined_seq <= seen_seq)
    return list(conn.execute(query.order_by(conversation_members.c.agent_id)).scalars())


def count_active_members(conn: Connection, conversation_id: str) -> int:
    return conn.execute(
        select(func.count()).where(
            conversation_members.c.conversation_id == conversation_id, conversation_members.c.left_at.is_(None)
        )
    ).scalar_one()


def peer_of(conn: Connection, conversation_id: str, agent_id: str) -> str | None:
    """The other member of a direct conversation."""
    return conn.execute(
        select(conversation_members.c.agent_id).where(
            conversation_members.c.conversation_id == conversation_id, conversation_members.c.agent_id != agent_id
        )
    ).scalars().first()


def list_for_agent(
    conn: Connection, agent_id: str, *, before: tuple[int, str] | None, limit: int
) -> list[RowMapping]:
    """The agent's current conversations with its membership columns, most recently active first.

    `before` is the (activity, id) of the last row of the previous page.
    """
    query = (
        select(conversations, *_member_columns)
        .join(conversation_members, conversation_members.c.conversation_id == conversations.c.id)
        .where(conversation_members.c.agent_id == agent_id, conversation_members.c.left_at.is_(None))
    )
    if before is not None:
        activity, conversation_id = before
        query = query.where(
            or_(
                conversations.c.activity < activity,
                and_(conversations.c.activity == activity, conversations.c.id < conversation_id),
            )
        )
    return list(
        conn.execute(query.order_by(conversations.c.activity.desc(), conversations.c.id.desc()).limit(limit)).mappings()
    )
