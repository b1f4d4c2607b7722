"""Messages: the timeline of each conversation, by `seq`."""

from collections.abc import Collection, Mapping
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, and_, bindparam, func, or_, select, update

from storage.schema import conversation_members, conversations, messages

from ._prepared import Prepared
from .blocks import blocked_by
from .conversations import advance_read_marker, next_seq

_insert_message = Prepared(messages.insert(), column_keys=[column.key for column in messages.columns])


def _append_in_one_statement() -> Prepared:
    """PostgreSQL: the conversation's next seq, the message with it, and `read_by`'s marker moved to it, in
    one statement (three round trips to the server otherwise, 60-140 µs apiece under a send load)."""
    counter = (update(conversations).where(conversations.c.id == bindparam("conversation_id"))
               .values(last_seq=conversations.c.last_seq + 1).returning(conversations.c.last_seq).cte("next_seq"))
    given = [column for column in messages.columns if column.key != "seq"]
    inserted = messages.insert().from_select(
        [*given, messages.c.seq], select(*[bindparam(column.key, type_=column.type) for column in given],
                                         counter.c.last_seq),
    ).cte("inserted")
    read = (update(conversation_members)
            .where(conversation_members.c.conversation_id == bindparam("conversation_id"),
                   conversation_members.c.agent_id == bindparam("read_by"),
                   conversation_members.c.last_read_seq < counter.c.last_seq)
            .values(last_read_seq=counter.c.last_seq).cte("read"))
    return Prepared(select(counter.c.last_seq).add_cte(inserted, read))


_append_message = _append_in_one_statement()


def append_message(conn: Connection, row: dict[str, Any], *, read_by: str) -> int:
    """Insert `row` (every column but `seq`) with the conversation's next seq, and move `read_by`'s read
    marker up to it; return the seq. Prepared: it runs for every message sent.

    The seq is taken as `next_seq` takes it (the conversation's row stays locked until the commit). On
    PostgreSQL the marker's condition is read in the statement's snapshot, taken before it waits for
    that row: right because a read marker only ever moves up.
    """
    if conn.dialect.name == "postgresql":
        seq = _append_message.scalar(conn, {**row, "read_by": read_by})
        assert seq is not None, f"no conversation {row['conversation_id']!r}"
        return int(seq)
    seq = next_seq(conn, row["conversation_id"])
    _insert_message.execute(conn, {**row, "seq": seq}).close()
    advance_read_marker(conn, row["conversation_id"], read_by, seq)
    return seq


def get_message(conn: Connection, message_id: str) -> RowMapping | None:
    return conn.execute(select(messages).where(messages.c.id == message_id)).mappings().first()


_by_client_msg_id = Prepared(select(messages).where(  # a send with a client_msg_id runs it
    messages.c.conversation_id == bindparam("conversation_id"),
    messages.c.sender_id == bindparam("sender_id"),
    messages.c.client_msg_id == bindparam("client_msg_id"),
))


def find_by_client_msg_id(
    conn: Connection, conversation_id: str, sender_id: str, client_msg_id: str
) -> Mapping[str, Any] | None:
    return _by_client_msg_id.mapping(conn, {"conversation_id": conversation_id, "sender_id": sender_id,
                                            "client_msg_id": client_msg_id})


def _not_from_blocked(reader_id: str | ColumnElement[str]) -> ColumnElement[bool]:
    """Agents' messages (not system ones) from senders `reader_id` blocks are left out."""
    return or_(messages.c.kind != "message", messages.c.sender_id.not_in(blocked_by(reader_id).scalar_subquery()))


@cache
def _page(*, newest: bool, before: bool, versions: bool = False) -> Prepared:
    """The statement of a page of `list_messages` (or of `list_message_versions`), prepared once for each
    shape: it runs for every page read, and building it (with its blocked-senders subquery) cost more than
    SQLite then takes to run it."""
    columns = (messages.c.id, messages.c.seq, messages.c.version) if versions else (messages,)
    query = select(*columns).where(
        messages.c.conversation_id == bindparam("p_conversation_id"),
        messages.c.seq > bindparam("p_after"),
        _not_from_blocked(bindparam("p_reader_id")),
    )
    if before:
        query = query.where(messages.c.seq < bindparam("p_before"))
    order = messages.c.seq.desc() if newest else messages.c.seq
    return Prepared(query.order_by(order).limit(bindparam("p_limit")))


def _page_params(conversation_id: str, from_seq: int, after: int | None, before: int | None, limit: int,
                 hide_blocked_for: str) -> dict[str, Any]:
    # `seq > after`, not `seq >= after + 1`: `after` may be the largest seq, and PostgreSQL's INTEGER has
    # no room for one more.
    params = {"p_conversation_id": conversation_id, "p_reader_id": hide_blocked_for, "p_limit": limit,
              "p_after": from_seq - 1 if after is None else max(from_seq - 1, after)}
    if before is not None:
        params["p_before"] = before
    return params


def list_messages(
    conn: Connection, conversation_id: str, *, from_seq: int, after: int | None, before: int | None, limit: int,
    hide_blocked_for: str,
) -> list[Mapping[str, Any]]:
    """Up to `limit` messages with `from_seq <= seq`, `after < seq < before`, in ascending seq, leaving out
    agents' messages from senders `hide_blocked_for` blocks.

    With `after`, the oldest such messages; otherwise the newest.
    """
    params = _page_params(conversation_id, from_seq, after, before, limit, hide_blocked_for)
    rows = _page(newest=after is None, before=before is not None).mappings(conn, params)
    return rows if after is not None else rows[::-1]


def list_message_versions(
    conn: Connection, conversation_id: str, *, from_seq: int, after: int | None, before: int | None, limit: int,
    hide_blocked_for: str,
) -> list[tuple[str, int, int]]:
    """`list_messages`'s page as (id, seq, version) of each message, for a reader that keeps what it has
    built from rows (prepared: it runs for every page read)."""
    params = _page_params(conversation_id, from_seq, after, before, limit, hide_blocked_for)
    rows = _page(newest=after is None, before=before is not None, versions=True).all(conn, params)
    return rows if after is not None else rows[::-1]


# Prepared: a page read fetches the rows of the messages it has no view of (message_views).
_by_ids = Prepared(select(messages).where(messages.c.id.in_(bindparam("message_ids", expanding=True))))


def messages_by_id(conn: Connection, message_ids: Collection[str]) -> list[Mapping[str, Any]]:
    """The messages with these ids."""
    return _by_ids.mappings(conn, {"message_ids": list(message_ids)})


_seq_range = Prepared(
    select(messages)
    .where(messages.c.conversation_id == bindparam("conversation_id"),
           messages.c.seq >= bindparam("first_seq"), messages.c.seq <= bindparam("last_seq"))
    .order_by(messages.c.seq)
)


def messages_between(
    conn: Connection, conversation_id: str, first_seq: int, last_seq: int
) -> list[Mapping[str, Any]]:
    """Every message of the conversation from `first_seq` to `last_seq`, in seq order, whoever sent it."""
    return _seq_range.mappings(conn, {"conversation_id": conversation_id, "first_seq": first_seq,
                                      "last_seq": last_seq})


# Prepared: these run for every page of `conversations.list` (and every `conversations.get` and
# `messages.mark_read`), and building and running them through `Connection.execute` cost more Python
# than SQLite then takes to run them (bench.history).
_reader = bindparam("reader_id")
_unread_of_member = Prepared(
    select(messages.c.conversation_id, func.count())
    .select_from(conversation_members)
    .join(messages, messages.c.conversation_id == conversation_members.c.conversation_id)
    .where(
        conversation_members.c.agent_id == _reader,
        conversation_members.c.conversation_id.in_(bindparam("conversation_ids", expanding=True)),
        messages.c.seq > conversation_members.c.last_read_seq,
        messages.c.seq >= conversation_members.c.joined_seq,
        # Unread: agents' messages that are not deleted, not the reader's own, not from agents it blocks.
        messages.c.kind == "message",
        messages.c.deleted_at.is_(None),
        messages.c.sender_id != _reader,
        messages.c.sender_id.not_in(blocked_by(_reader).scalar_subquery()),
    )
    .group_by(messages.c.conversation_id)
)
_newest_messages = Prepared(
    select(messages)
    .join(conversations, and_(conversations.c.id == messages.c.conversation_id,
                              conversations.c.last_seq == messages.c.seq))
    .where(conversations.c.id.in_(bindparam("conversation_ids", expanding=True)))
)


def count_unread_of_member(conn: Connection, conversation_ids: Collection[str], *, reader_id: str) -> dict[str, int]:
    """Unread messages of several conversations of member `reader_id`, in one query: each
    after its read marker and never before the member joined (`views.unread_after`, here taken from the
    membership row)."""
    if not conversation_ids:
        return {}
    counts = dict(_unread_of_member.all(conn, {"reader_id": reader_id, "conversation_ids": list(conversation_ids)}))
    return {conversation_id: int(counts.get(conversation_id, 0)) for conversation_id in conversation_ids}


def newest_messages(conn: Connection, conversation_ids: Collection[str]) -> dict[str, Mapping[str, Any]]:
    """The message at each conversation's `last_seq`, by conversation id (one query)."""
    if not conversation_ids:
        return {}
    rows = _newest_messages.mappings(conn, {"conversation_ids": list(conversation_ids)})
    return {row["conversation_id"]: row for row in rows}


def update_message(conn: Connection, message_id: str, values: dict[str, Any]) -> None:
    """Change the message's `values`, and bump its version: every change to a message row goes through here."""
    conn.execute(update(messages).where(messages.c.id == message_id)
                 .values(**values, version=messages.c.version + 1))
