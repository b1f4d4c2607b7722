"""Messages: the timeline of each conversation, by `seq`."""

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, and_, func, or_, select, update

from storage.schema import conversation_members, conversations, messages

from ._prepared import Prepared
from .blocks import blocked_by

_insert_message = Prepared(messages.insert(), column_keys=[column.key for column in messages.columns])


def insert_message(conn: Connection, row: dict[str, Any]) -> None:
    """`row` has every column (prepared: it runs for every message sent)."""
    _insert_message.execute(conn, row).close()


def get_message(conn: Connection, message_id: str) -> RowMapping | None:
    return conn.execute(select(messages).where(messages.c.id == message_id)).mappings().first()


def find_by_client_msg_id(
    conn: Connection, conversation_id: str, sender_id: str, client_msg_id: str
) -> RowMapping | None:
    return conn.execute(
        select(messages).where(
            messages.c.conversation_id == conversation_id,
            messages.c.sender_id == sender_id,
            messages.c.client_msg_id == client_msg_id,
        )
    ).mappings().first()


def _not_from_blocked(reader_id: str | None) -> ColumnElement[bool] | None:
    """Agents' messages (not system ones) from senders `reader_id` blocks are left out."""
    if reader_id is None:
        return None
    return or_(messages.c.kind != "message", messages.c.sender_id.not_in(blocked_by(reader_id).scalar_subquery()))


def list_messages(
    conn: Connection, conversation_id: str, *, from_seq: int, after: int | None, before: int | None, limit: int,
    hide_blocked_for: str | None,
) -> list[RowMapping]:
    """Up to `limit` messages with `from_seq <= seq`, `after < seq < before`, in ascending seq.

    With `after`, the oldest such messages; otherwise the newest.
    """
    query = select(messages).where(messages.c.conversation_id == conversation_id, messages.c.seq >= from_seq)
    if after is not None:
        query = query.where(messages.c.seq > after)
    if before is not None:
        query = query.where(messages.c.seq < before)
    if (condition := _not_from_blocked(hide_blocked_for)) is not None:
        query = query.where(condition)
    if after is not None:
        return list(conn.execute(query.order_by(messages.c.seq).limit(limit)).mappings())
    rows = list(conn.execute(query.order_by(messages.c.seq.desc()).limit(limit)).mappings())
    rows.reverse()
    return rows


def _unread(reader_id: str) -> tuple[ColumnElement[bool], ...]:
    """What counts as unread for `reader_id`, besides the seq: agents' messages that are not deleted, not
    the reader's own, not from agents it blocks."""
    return (
        messages.c.kind == "message",
        messages.c.deleted_at.is_(None),
        messages.c.sender_id != reader_id,
        messages.c.sender_id.not_in(blocked_by(reader_id).scalar_subquery()),
    )


def count_unread(conn: Connection, conversation_id: str, *, reader_id: str, after_seq: int) -> int:
    """Unread messages (see `_unread`) after `after_seq`."""
    query = select(func.count()).where(
        messages.c.conversation_id == conversation_id, messages.c.seq > after_seq, *_unread(reader_id)
    )
    return int(conn.execute(query).scalar_one())


def count_unread_of_member(conn: Connection, conversation_ids: Collection[str], *, reader_id: str) -> dict[str, int]:
    """`count_unread` of several conversations of member `reader_id` in one query, each after its read
    marker and never before the member joined (`views.unread_after`, here taken from the membership row)."""
    if not conversation_ids:
        return {}
    member = conversation_members
    query = (
        select(messages.c.conversation_id, func.count())
        .select_from(member)
        .join(messages, messages.c.conversation_id == member.c.conversation_id)
        .where(
            member.c.agent_id == reader_id,
            member.c.conversation_id.in_(conversation_ids),
            messages.c.seq > member.c.last_read_seq,
            messages.c.seq >= member.c.joined_seq,
            *_unread(reader_id),
        )
        .group_by(messages.c.conversation_id)
    )
    counts = dict(conn.execute(query).all())
    return {conversation_id: int(counts.get(conversation_id, 0)) for conversation_id in conversation_ids}


def newest_messages(conn: Connection, conversation_ids: Collection[str]) -> dict[str, RowMapping]:
    """The message at each conversation's `last_seq`, by conversation id (one query)."""
    if not conversation_ids:
        return {}
    query = (
        select(messages)
        .join(conversations, and_(conversations.c.id == messages.c.conversation_id,
                                  conversations.c.last_seq == messages.c.seq))
        .where(conversations.c.id.in_(conversation_ids))
    )
    return {row["conversation_id"]: row for row in conn.execute(query).mappings()}


def update_message(conn: Connection, message_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(messages).where(messages.c.id == message_id).values(**values))
