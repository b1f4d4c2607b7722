"""Conversations and their members."""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, exists, func, or_, select, update

from storage.schema import agents, blocks, conversation_members, conversations

from ._prepared import Prepared

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
# Those run for every message are `Prepared`: compiled once, run on the DBAPI cursor.
_get_conversation = Prepared(select(conversations).where(conversations.c.id == bindparam("p_id")))
_next_seq = Prepared(
    update(conversations).where(conversations.c.id == bindparam("p_id"))
    .values(last_seq=conversations.c.last_seq + 1).returning(conversations.c.last_seq)
)
_blocker = conversation_members.alias("blocker")
# Whether another member blocks the agent is for a send; a page read pays one index search for it. The
# search starts from the blocks of the agent (almost always none), so a large group costs no more than
# a direct conversation: no planner may walk the members first.
_current_membership = Prepared(
    select(conversations.c.kind, conversation_members.c.joined_seq,
           exists().where(blocks.c.blocked_agent_id == bindparam("p_agent_id"),
                          blocks.c.agent_id != bindparam("p_agent_id"),
                          exists().where(_blocker.c.conversation_id == bindparam("p_conversation_id"),
                                         _blocker.c.agent_id == blocks.c.agent_id))
           .label("blocked_by_other_member"))
    .join(conversation_members, conversation_members.c.conversation_id == conversations.c.id)
    .where(conversations.c.id == bindparam("p_conversation_id"),
           conversation_members.c.agent_id == bindparam("p_agent_id"),
           conversation_members.c.left_at.is_(None))
)
_get_member = Prepared(select(conversation_members).where(
    conversation_members.c.conversation_id == bindparam("p_conversation_id"),
    conversation_members.c.agent_id == bindparam("p_agent_id"),
))
_advance_read_marker = Prepared(
    update(conversation_members)
    .where(
        conversation_members.c.conversation_id == bindparam("p_conversation_id"),
        conversation_members.c.agent_id == bindparam("p_agent_id"),
        conversation_members.c.last_read_seq < bindparam("p_seq"),
    )
    .values(last_read_seq=bindparam("p_seq"))
)
# Current members (who joined at or before a seq) who block neither the conversation nor an agent.
_unblocked_members = (
    select(conversation_members.c.agent_id)
    .where(
        conversation_members.c.conversation_id == bindparam("p_conversation_id"),
        conversation_members.c.left_at.is_(None),
        ~exists().where(
            blocks.c.agent_id == conversation_members.c.agent_id,
            or_(blocks.c.blocked_conversation_id == bindparam("p_conversation_id"),
                blocks.c.blocked_agent_id == bindparam("p_blocked_agent_id")),
        ),
    )
    .order_by(conversation_members.c.agent_id)
)
unblocked_members_seen = _unblocked_members.where(conversation_members.c.joined_seq <= bindparam("p_seen_seq"))
"""`unblocked_member_ids` with a `seen_seq`, for a statement to build on (`events.append_event`); its binds are
`p_conversation_id`, `p_seen_seq` and `p_blocked_agent_id` (`MembersAsOf.params`)."""
_unblocked_member_ids = Prepared(_unblocked_members)
_unblocked_member_ids_seen = Prepared(unblocked_members_seen)


@dataclass(frozen=True)
class MembersAsOf:
    """Whom an event about a message at `seq` goes to: `unblocked_member_ids(conversation_id, seen_seq=seq,
    blocked_agent_id=sender_id)`, named rather than read, so an append can read it in its own statement."""

    conversation_id: str
    seq: int
    sender_id: str | None

    def params(self) -> dict[str, Any]:
        return {"p_conversation_id": self.conversation_id, "p_seen_seq": self.seq,
                "p_blocked_agent_id": self.sender_id}


def get_conversation(conn: Connection, conversation_id: str) -> Mapping[str, Any] | None:
    return _get_conversation.mapping(conn, {"p_id": conversation_id})


def find_direct(conn: Connection, direct_key: str) -> RowMapping | None:
    return conn.execute(select(conversations).where(conversations.c.direct_key == direct_key)).mappings().first()


def next_seq(conn: Connection, conversation_id: str) -> int:
    """Take the conversation's next `seq` inside the caller's transaction.

    One `UPDATE … RETURNING`: the update locks the row until the commit (PostgreSQL; SQLite's
    writer holds the database lock already), so concurrent senders are serialized on the counter
    and the sequence has neither duplicates nor holes: a rolled-back send rolls its increment back.
    """
    seq = _next_seq.scalar(conn, {"p_id": conversation_id})
    assert seq is not None, f"no conversation {conversation_id!r}"
    return int(seq)


def current_membership(conn: Connection, conversation_id: str, agent_id: str) -> tuple[str, int, bool] | None:
    """The conversation's `kind`, the member's `joined_seq`, and whether another member (current or past)
    blocks `agent_id`, if it is a current member (a light `get_member` + `get_conversation`, for the hot
    paths: a send's first statement, a page's)."""
    row = _current_membership.first(conn, {"p_conversation_id": conversation_id, "p_agent_id": agent_id})
    return None if row is None else (row[0], int(row[1]), bool(row[2]))


def update_conversation(conn: Connection, conversation_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(**values))


def insert_members(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(conversation_members.insert(), list(rows))


def get_member(conn: Connection, conversation_id: str, agent_id: str) -> Mapping[str, Any] | None:
    """The membership row, whether the agent is still a member (`left_at` null) or not."""
    return _get_member.mapping(conn, {"p_conversation_id": conversation_id, "p_agent_id": agent_id})


def update_member(conn: Connection, conversation_id: str, agent_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(conversation_members)
        .where(conversation_members.c.conversation_id == conversation_id, conversation_members.c.agent_id == agent_id)
        .values(**values)
    )


def advance_read_marker(conn: Connection, conversation_id: str, agent_id: str, seq: int) -> bool:
    """Move the member's read marker up to `seq`; False when it already was there or beyond."""
    params = {"p_conversation_id": conversation_id, "p_agent_id": agent_id, "p_seq": seq}
    return _advance_read_marker.rowcount(conn, params) == 1


_active_members = Prepared(  # every `conversations.get` (and every MCP `read_messages`) runs it
    select(conversation_members, agents.c.handle)
    .join(agents, agents.c.id == conversation_members.c.agent_id)
    .where(conversation_members.c.conversation_id == bindparam("p_conversation_id"),
           conversation_members.c.left_at.is_(None))
    .order_by(conversation_members.c.joined_at, conversation_members.c.agent_id)
)


def active_members(conn: Connection, conversation_id: str) -> list[Mapping[str, Any]]:
    """Current members with their handles, oldest first."""
    return _active_members.mappings(conn, {"p_conversation_id": conversation_id})


def unblocked_member_ids(
    conn: Connection, conversation_id: str, *, seen_seq: int | None = None, blocked_agent_id: str | None = None
) -> list[str]:
    """Current members (with `seen_seq`, those who joined at or before it), less the members who block the
    conversation or (if given) `blocked_agent_id`."""
    if seen_seq is None:
        return _unblocked_member_ids.column(conn, {"p_conversation_id": conversation_id,
                                                   "p_blocked_agent_id": blocked_agent_id})
    return _unblocked_member_ids_seen.column(conn, MembersAsOf(conversation_id, seen_seq, blocked_agent_id).params())


def count_active_members(conn: Connection, conversation_id: str) -> int:
    return conn.execute(
        select(func.count()).where(
            conversation_members.c.conversation_id == conversation_id, conversation_members.c.left_at.is_(None)
        )
    ).scalar_one()


# Prepared: these run for every page of `conversations.list` (see messages.newest_messages).
_active_members_of = Prepared(
    select(conversation_members.c.conversation_id, func.count())
    .where(conversation_members.c.conversation_id.in_(bindparam("conversation_ids", expanding=True)),
           conversation_members.c.left_at.is_(None))
    .group_by(conversation_members.c.conversation_id)
)
_others_of = Prepared(select(conversation_members.c.conversation_id, conversation_members.c.agent_id).where(
    conversation_members.c.conversation_id.in_(bindparam("conversation_ids", expanding=True)),
    conversation_members.c.agent_id != bindparam("agent_id"),
))


def count_active_members_of(conn: Connection, conversation_ids: Collection[str]) -> dict[str, int]:
    """`count_active_members` of several conversations in one query."""
    if not conversation_ids:
        return {}
    counts = dict(_active_members_of.all(conn, {"conversation_ids": list(conversation_ids)}))
    return {conversation_id: int(counts.get(conversation_id, 0)) for conversation_id in conversation_ids}


def peers_of(conn: Connection, conversation_ids: Collection[str], agent_id: str) -> dict[str, str]:
    """`peer_of` for several (direct) conversations in one query."""
    if not conversation_ids:
        return {}
    peers: dict[str, str] = {}
    for conversation_id, peer_id in _others_of.all(conn, {"conversation_ids": list(conversation_ids),
                                                          "agent_id": agent_id}):
        peers.setdefault(conversation_id, peer_id)
    return peers


def list_for_agent(
    conn: Connection, agent_id: str, *, before: tuple[int, str] | None, limit: int
) -> list[Mapping[str, Any]]:
    """The agent's current conversations with its membership columns, most recently active first.

    `before` is the (activity, id) of the last row of the previous page.
    """
    params: dict[str, Any] = {"agent_id": agent_id, "limit": limit}
    if before is not None:
        params["activity"], params["conversation_id"] = before
    return _conversations_of(after_a_page=before is not None).mappings(conn, params)


@cache
def _conversations_of(*, after_a_page: bool) -> Prepared:
    """`list_for_agent`'s statement, prepared once for each shape (it runs for every page)."""
    query = (
        select(conversations, *_member_columns)
        .join(conversation_members, conversation_members.c.conversation_id == conversations.c.id)
        .where(conversation_members.c.agent_id == bindparam("agent_id"), conversation_members.c.left_at.is_(None))
    )
    if after_a_page:
        query = query.where(or_(
            conversations.c.activity < bindparam("activity"),
            and_(conversations.c.activity == bindparam("activity"), conversations.c.id < bindparam("conversation_id")),
        ))
    newest_first = (conversations.c.activity.desc(), conversations.c.id.desc())
    return Prepared(query.order_by(*newest_first).limit(bindparam("limit")))


