"""Messages: the timeline of each conversation, by `seq`."""

from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, func, or_, select, update

from storage.schema import messages

from .blocks import blocked_by


def insert_message(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(messages.insert().values(**row))


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


def count_unread(conn: Connection, conversation_id: str, *, reader_id: str, after_seq: int) -> int:
    """Agents' messages after `after_seq` that are not deleted, not the reader's, not from agents it blocks."""
    query = select(func.count()).where(
        messages.c.conversation_id == conversation_id,
        messages.c.seq > after_seq,
        messages.c.kind == "message",
        messages.c.deleted_at.is_(None),
        messages.c.sender_id != reader_id,
        messages.c.sender_id.not_in(blocked_by(reader_id).scalar_subquery()),
    )
    return int(conn.execute(query).scalar_one())


def update_message(conn: Connection, message_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(messages).where(messages.c.id == message_id).values(**values))
