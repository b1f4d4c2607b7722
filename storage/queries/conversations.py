"""Conversations and their members."""

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, func, or_, select, update

from storage.schema import agents, conversation_members, conversations

_member_columns = (
    conversation_members.c.role,
    conversation_members.c.joined_at,
    conversation_members.c.joined_seq,
    conversation_members.c.last_read_seq,
)


def insert_conversation(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(conversations.insert().values(**row))


# The statements of the send path are built once, with bind parameters: building a statement and
# its cache key costs SQLAlchemy several times what SQLite then takes to run it (bench/send.py).
_get_conversation = select(conversations).where(conversations.c.id == bindparam("p_id"))
_next_seq = (
    update(conversations).where(conversations.c.id == bindparam("p_id"))
    .values(last_seq=conversations.c.last_seq + 1).returning(conversations.c.last_seq)
)
_set_activity = (
    update(conversations).where(conversations.c.id == bindparam("p_id"))
    .values(activity=bindparam("p_activity"), last_activity_at=bindparam("p_at"))
)
_get_member = select(conversation_members).where(
    conversation_members.c.conversation_id == bindparam("p_conversation_id"),
    conversation_members.c.agent_id == bindparam("p_agent_id"),
)
_advance_read_marker = (
    update(conversation_members)
    .where(
        conversation_members.c.conversation_id == bindparam("p_conversation_id"),
        conversation_members.c.agent_id == bindparam("p_agent_id"),
        conversation_members.c.last_read_seq < bindparam("p_seq"),
    )
    .values(last_read_seq=bindparam("p_seq"))
)
_active_member_ids = (
    select(conversation_members.c.agent_id)
    .where(conversation_members.c.conversation_id == bindparam("p_conversation_id"),
           conversation_members.c.left_at.is_(None))
    .order_by(conversation_members.c.agent_id)
)
_active_member_ids_seen = _active_member_ids.where(conversation_members.c.joined_seq <= bindparam("p_seen_seq"))
_peer_of = select(conversation_members.c.agent_id).where(
    conversation_members.c.conversation_id == bindparam("p_conversation_id"),
    conversation_members.c.agent_id != bindparam("p_agent_id"),
)


def get_conversation(conn: Connection, conversation_id: str) -> RowMapping | None:
    return conn.execute(_get_conversation, {"p_id": conversation_id}).mappings().first()


def find_direct(conn: Connection, direct_key: str) -> RowMapping | None:
    return conn.execute(select(conversations).where(conversations.c.direct_key == direct_key)).mappings().first()


def next_seq(conn: Connection, conversation_id: str) -> int:
    """Take the conversation's next `seq` inside the caller's transaction.

    One `UPDATE … RETURNING`: the update locks the row until the commit (PostgreSQL; SQLite's
    writer holds the database lock already), so concurrent senders are serialized on the counter
    and the sequence has neither duplicates nor holes: a rolled-back send rolls its increment back.
    """
    return int(conn.execute(_next_seq, {"p_id": conversation_id}).scalar_one())


def set_activity(conn: Connection, conversation_id: str, activity: int, at: datetime) -> None:
    conn.execute(_set_activity, {"p_id": conversation_id, "p_activity": activity, "p_at": at})


def update_conversation(conn: Connection, conversation_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(**values))


def insert_members(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(conversation_members.insert(), list(rows))


def get_member(conn: Connection, conversation_id: str, agent_id: str) -> RowMapping | None:
    """The membership row, whether the agent is still a member (`left_at` null) or not."""
    return conn.execute(_get_member, {"p_conversation_id": conversation_id, "p_agent_id": agent_id}).mappings().first()


def update_member(conn: Connection, conversation_id: str, agent_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(conversation_members)
        .where(conversation_members.c.conversation_id == conversation_id, conversation_members.c.agent_id == agent_id)
        .values(**values)
    )


def advance_read_marker(conn: Connection, conversation_id: str, agent_id: str, seq: int) -> bool:
    """Move the member's read marker up to `seq`; False when it already was there or beyond."""
    result = conn.execute(_advance_read_marker, {"p_conversation_id": conversation_id, "p_agent_id": agent_id,
                                                 "p_seq": seq})
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
    if seen_seq is None:
        return list(conn.execute(_active_member_ids, {"p_conversation_id": conversation_id}).scalars())
    params = {"p_conversation_id": conversation_id, "p_seen_seq": seen_seq}
    return list(conn.execute(_active_member_ids_seen, params).scalars())


def count_active_members(conn: Connection, conversation_id: str) -> int:
    return conn.execute(
        select(func.count()).where(
            conversation_members.c.conversation_id == conversation_id, conversation_members.c.left_at.is_(None)
        )
    ).scalar_one()


def count_active_members_of(conn: Connection, conversation_ids: Collection[str]) -> dict[str, int]:
    """`count_active_members` of several conversations in one query."""
    if not conversation_ids:
        return {}
    counts = dict(
        conn.execute(
            select(conversation_members.c.conversation_id, func.count())
            .where(
                conversation_members.c.conversation_id.in_(conversation_ids), conversation_members.c.left_at.is_(None)
            )
            .group_by(conversation_members.c.conversation_id)
        ).all()
    )
    return {conversation_id: int(counts.get(conversation_id, 0)) for conversation_id in conversation_ids}


def peers_of(conn: Connection, conversation_ids: Collection[str], agent_id: str) -> dict[str, str]:
    """`peer_of` for several (direct) conversations in one query."""
    if not conversation_ids:
        return {}
    peers: dict[str, str] = {}
    for conversation_id, peer_id in conn.execute(
        select(conversation_members.c.conversation_id, conversation_members.c.agent_id).where(
            conversation_members.c.conversation_id.in_(conversation_ids), conversation_members.c.agent_id != agent_id
        )
    ):
        peers.setdefault(conversation_id, peer_id)
    return peers


def peer_of(conn: Connection, conversation_id: str, agent_id: str) -> str | None:
    """The other member of a direct conversation."""
    return conn.execute(_peer_of, {"p_conversation_id": conversation_id, "p_agent_id": agent_id}).scalars().first()


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
