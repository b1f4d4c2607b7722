"""Events and their deliveries: the hub-wide, cursor-ordered change feed, fanned out on write."""

from collections.abc import Collection
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, RowMapping, Select, String, bindparam, func, select, update
from sqlalchemy.dialects import postgresql

from storage.schema import EncodedJson, conversations, deliveries, events

from ._prepared import Prepared
from .conversations import MembersAsOf, unblocked_member_ids, unblocked_members_seen
from .workflows import runs_waiting_on, waiting_on_reply

EVENT_APPEND_LOCK: Final = 0x70617231  # "par1": the advisory lock that orders event appends
"""A transaction-scoped PostgreSQL advisory lock key; any constant no other code uses."""


def serialize_appends(conn: Connection) -> None:
    """Take the event-append lock for the rest of the transaction (PostgreSQL; SQLite needs none).

    Cursors are ids from a sequence, and on PostgreSQL two transactions can take ids 10 and 11 and
    commit 11 first: a reader that saw 11 and moved its cursor past it would never see 10
    (docs/design.md §9). Holding this lock from the first append to the commit makes commit order
    equal cursor order across connections and nodes. SQLite's single writer orders them already.
    Take it before any row lock, so transactions always lock in the same order and cannot deadlock.

    Taken once per transaction: the writer's group commit runs many writes in one, and each statement
    is a round trip to PostgreSQL. Inside a savepoint it is taken again (cheaply: the lock is
    re-entrant), because rolling back to a savepoint releases the locks taken after it.
    """
    if conn.dialect.name != "postgresql":
        return
    holder = conn.get_nested_transaction() or conn.get_transaction()
    if holder is not None and holder.is_active and conn.info.get(_APPEND_LOCK_HELD) is holder:
        return
    _serialize_appends.scalar(conn, {})
    conn.info[_APPEND_LOCK_HELD] = holder


_APPEND_LOCK_HELD: Final = "event_append_lock"
"""`conn.info` key: the transaction (or savepoint) the event-append lock was last taken in."""

# Prepared: they run for every message sent (see storage/queries/_prepared.py).
_serialize_appends = Prepared(select(func.pg_advisory_xact_lock(EVENT_APPEND_LOCK)))
_insert_event = Prepared(
    events.insert().returning(events.c.id),
    column_keys=("type", "subject_id", "payload", "created_at"),
)
_insert_deliveries = Prepared(deliveries.insert(), column_keys=("agent_id", "event_id"))
_set_activity = Prepared(
    update(conversations).where(conversations.c.id == bindparam("conversation_id"))
    .values(activity=bindparam("cursor"), last_activity_at=bindparam("created_at"))
)


def _append_in_one_statement(recipients: Select[Any], *, named: bool, waiting: Select[Any] | None = None) -> Prepared:
    """PostgreSQL: the event, its deliveries and the conversation's activity in one statement, returning
    the event's id, then (when the recipients are `named`, not listed) their ids, then (with `waiting`)
    the ids that query reads; null for none.

    Each statement is a round trip to the server (60-140 µs apiece measured under a send load), and an
    append is three of them otherwise, four when the recipients are read first. `recipients` gives the
    deliveries' agents: the ids passed as one array, or the members a `MembersAsOf` names. What this
    statement reads is as of its start, as a statement of its own there would read it: for a send, after
    the message's append, which holds the conversation's row, so a member who joined or blocked while
    the send waited for it is seen.
    """
    to = recipients.cte("recipients")
    new_event = (events.insert()
                 .values(type=bindparam("type"), subject_id=bindparam("subject_id"), payload=bindparam("payload"),
                         created_at=bindparam("created_at"))
                 .returning(events.c.id).cte("new_event"))
    delivered = deliveries.insert().from_select(
        ["agent_id", "event_id"], select(to.c.agent_id, new_event.c.id)).cte("delivered")
    active = (update(conversations).where(conversations.c.id == bindparam("conversation_id"))
              .values(activity=select(new_event.c.id).scalar_subquery(), last_activity_at=bindparam("created_at"))
              .cte("active"))
    columns = [new_event.c.id, _ids_of(to.c.agent_id)] if named else [new_event.c.id]
    if waiting is not None:
        columns.append(_ids_of(waiting.cte("waiting").c[0]))
    return Prepared(select(*columns).add_cte(delivered, active))


def _ids_of(column: ColumnElement[str]) -> ColumnElement[Any]:
    return select(func.array_agg(postgresql.aggregate_order_by(column, column))).scalar_subquery()


_append_to = _append_in_one_statement(
    select(func.unnest(bindparam("agent_ids", type_=postgresql.ARRAY(String))).label("agent_id")), named=False)
_append_to_members = _append_in_one_statement(unblocked_members_seen, named=True)
_append_message_event = _append_in_one_statement(unblocked_members_seen, named=True, waiting=waiting_on_reply)


def append_event(
    conn: Connection, *, type: str, subject_id: str | None, payload: str, created_at: datetime,
    to: Collection[str] | MembersAsOf, activity_of: str | None = None,
) -> tuple[int, list[str]]:
    """Append one event about `subject_id` (the message or memory its payload carries), delivered to the
    agents `to` (or to the members it names); with `activity_of`, it becomes that conversation's latest
    activity. Returns its cursor and whom it was delivered to.

    `payload` is the event's JSON text, stored as it is.
    """
    params = _event_params(type, subject_id, payload, created_at)
    if conn.dialect.name == "postgresql":
        if isinstance(to, MembersAsOf):
            row = _append_to_members.first(conn, {**params, **to.params(), "conversation_id": activity_of})
            assert row is not None
            return int(row[0]), list(row[1] or ())
        cursor = _append_to.scalar(conn, {**params, "agent_ids": list(to), "conversation_id": activity_of})
        return int(cursor), list(to)
    if isinstance(to, MembersAsOf):
        to = unblocked_member_ids(conn, to.conversation_id, seen_seq=to.seq, blocked_agent_id=to.sender_id)
    cursor = int(_insert_event.scalar(conn, params))
    if to:
        _insert_deliveries.execute_many(conn, [{"agent_id": agent_id, "event_id": cursor} for agent_id in to])
    if activity_of is not None:
        _set_activity.rowcount(conn, {"conversation_id": activity_of, "cursor": cursor, "created_at": created_at})
    return cursor, list(to)


def _event_params(type: str, subject_id: str | None, payload: str, created_at: datetime) -> dict[str, Any]:
    return {"type": type, "subject_id": subject_id, "payload": EncodedJson(payload), "created_at": created_at}


def append_message_event(
    conn: Connection, *, type: str, subject_id: str, payload: str, created_at: datetime, to: MembersAsOf,
) -> tuple[int, list[str], list[str]]:
    """`append_event` of a new message from `to.sender_id`, the conversation's latest activity, which also
    reads the workflow runs whose `ask` it answers (`workflows.runs_waiting_on`): on PostgreSQL in the
    same statement, one round trip less. Returns the cursor, whom it was delivered to, and those runs."""
    assert to.sender_id is not None, "a new message has a sender"
    if conn.dialect.name == "postgresql":
        row = _append_message_event.first(conn, {**_event_params(type, subject_id, payload, created_at), **to.params(),
                                                 "p_sender_id": to.sender_id, "conversation_id": to.conversation_id})
        assert row is not None
        return int(row[0]), list(row[1] or ()), list(row[2] or ())
    cursor, delivered_to = append_event(conn, type=type, subject_id=subject_id, payload=payload,
                                        created_at=created_at, to=to, activity_of=to.conversation_id)
    return cursor, delivered_to, runs_waiting_on(conn, to.conversation_id, to.sender_id)


def list_for_agent(conn: Connection, agent_id: str, *, after: int, limit: int) -> list[RowMapping]:
    """The events delivered to `agent_id` with a cursor above `after`, oldest first."""
    return list(
        conn.execute(
            select(events.c.id, events.c.payload)
            .join(deliveries, deliveries.c.event_id == events.c.id)
            .where(deliveries.c.agent_id == agent_id, deliveries.c.event_id > after)
            .order_by(deliveries.c.event_id)
            .limit(limit)
        ).mappings()
    )


def deliveries_of(conn: Connection, event_ids: Collection[int]) -> list[RowMapping]:
    """The events among `event_ids` that exist, once per recipient (`agent_id`), oldest first."""
    return list(
        conn.execute(
            select(events.c.id, events.c.payload, deliveries.c.agent_id)
            .join(deliveries, deliveries.c.event_id == events.c.id)
            .where(events.c.id.in_(event_ids))
            .order_by(events.c.id)
        ).mappings()
    )


def head(conn: Connection) -> int:
    """The newest cursor in the hub, 0 before the first event."""
    return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())


def events_about(conn: Connection, subject_id: str) -> list[RowMapping]:
    """The events whose payload carries `subject_id` (a message or a memory)."""
    return list(
        conn.execute(select(events.c.id, events.c.payload).where(events.c.subject_id == subject_id)).mappings()
    )


def replace_payload(conn: Connection, event_id: int, payload: dict[str, Any]) -> None:
    conn.execute(update(events).where(events.c.id == event_id).values(payload=payload))
