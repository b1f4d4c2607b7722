"""Files, the content-addressed blobs that hold their bytes, and which messages carry which files.

A blob is a file's bytes, stored once per SHA-256 in chunks of `CHUNK_BYTES`, so that reading a range
reads only the chunks it covers and no single row is large. This is the seam where an object store
would take over (`put_blob`, `blob_chunks_for`, `drop_blob_if_unused`): the rest of the hub knows only
a SHA-256.
"""

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, RowMapping, and_, bindparam, delete, exists, func, insert, or_, select

from storage.schema import blob_chunks, blobs, conversation_members, documents, files, message_attachments, messages

from ._prepared import Prepared
from .blocks import blocked_by

CHUNK_BYTES: Final = 256 * 1024


def put_blob(conn: Connection, sha256: str, size: int, chunks: Iterable[bytes], now: datetime) -> None:
    """Store a blob from its chunks (of `CHUNK_BYTES`, the last one shorter), unless it is stored already."""
    if _blob_exists.scalar(conn, {"sha256": sha256}):
        return
    _insert_blob.execute(conn, {"sha256": sha256, "size": size, "created_at": now}).close()
    for seq, data in enumerate(chunks):
        _insert_blob_chunk.execute(conn, {"sha256": sha256, "seq": seq, "data": data}).close()


# Prepared: they run for every file uploaded and every document added (see storage/queries/_prepared.py).
_blob_exists = Prepared(select(exists().where(blobs.c.sha256 == bindparam("sha256"))))
_insert_blob = Prepared(insert(blobs), column_keys=("sha256", "size", "created_at"))
_insert_blob_chunk = Prepared(insert(blob_chunks), column_keys=("sha256", "seq", "data"))


def blob_chunks_for(conn: Connection, sha256: str, first: int, last: int) -> list[bytes]:
    """Chunks `first`..`last` (inclusive) of a blob, in order."""
    query = (select(blob_chunks.c.data).where(blob_chunks.c.sha256 == sha256, blob_chunks.c.seq >= first,
                                              blob_chunks.c.seq <= last).order_by(blob_chunks.c.seq))
    return [bytes(data) for data in conn.execute(query).scalars()]


def drop_blob_if_unused(conn: Connection, sha256: str) -> bool:
    """Delete a blob (its chunks go with it) when no file and no document refers to it any more."""
    in_use = conn.execute(select(or_(exists().where(files.c.sha256 == sha256),
                                     exists().where(documents.c.sha256 == sha256)))).scalar_one()
    if in_use:
        return False
    conn.execute(delete(blobs).where(blobs.c.sha256 == sha256))
    return True


def insert_file(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(files).values(**row))


def get_file(conn: Connection, file_id: str) -> RowMapping | None:
    return conn.execute(select(files).where(files.c.id == file_id)).mappings().first()


def delete_file(conn: Connection, file_id: str) -> None:
    """The file; the links of messages that carried it go with it."""
    conn.execute(delete(files).where(files.c.id == file_id))


def files_of(conn: Connection, owner_id: str, *, after_id: str | None, limit: int) -> list[RowMapping]:
    query = select(files).where(files.c.owner_id == owner_id)
    if after_id is not None:
        query = query.where(files.c.id < after_id)
    return list(conn.execute(query.order_by(files.c.id.desc()).limit(limit)).mappings())


def expired(conn: Connection, now: datetime, limit: int) -> list[RowMapping]:
    query = select(files).where(files.c.expires_at.is_not(None), files.c.expires_at <= now).limit(limit)
    return list(conn.execute(query).mappings())


def next_expiry(conn: Connection) -> datetime | None:
    return conn.execute(select(func.min(files.c.expires_at))).scalar()


def attach(conn: Connection, message_id: str, file_ids: Collection[str]) -> None:
    if file_ids:
        conn.execute(insert(message_attachments), [{"message_id": message_id, "file_id": f} for f in file_ids])


def detach_all(conn: Connection, message_id: str) -> None:
    conn.execute(delete(message_attachments).where(message_attachments.c.message_id == message_id))


def messages_carrying(conn: Connection, file_id: str) -> list[RowMapping]:
    """The id and attachments of every message carrying the file."""
    query = (select(messages.c.id, messages.c.attachments)
             .join(message_attachments, message_attachments.c.message_id == messages.c.id)
             .where(message_attachments.c.file_id == file_id))
    return list(conn.execute(query).mappings())


def carried_to(conn: Connection, file_id: str, agent_id: str) -> bool:
    """Whether a message carrying the file is one the agent can see: in a conversation it is a current
    member of, sent since it joined, and not from an agent it blocks (as `messages.get` decides)."""
    query = select(exists().where(
        message_attachments.c.file_id == file_id,
        messages.c.id == message_attachments.c.message_id,
        messages.c.deleted_at.is_(None),
        conversation_members.c.conversation_id == messages.c.conversation_id,
        conversation_members.c.agent_id == agent_id,
        conversation_members.c.left_at.is_(None),
        messages.c.seq >= conversation_members.c.joined_seq,
        and_(messages.c.sender_id.not_in(blocked_by(agent_id).scalar_subquery())),
    ))
    return bool(conn.execute(query).scalar_one())
