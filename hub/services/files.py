"""Files: uploads kept by their owner, attached to messages, read by whoever may see those messages.

- Upload: over REST as `multipart/form-data` (streamed to a temporary file by the bridge, then to the
  store in chunks: never the whole body in memory), or base64 inside a JSON request (smaller). The
  bytes are hashed and their media type sniffed; bytes already stored (by anyone) are not stored again.
- Read: the owner, and the current members of a conversation with a message carrying the file that
  they can see. Anyone else gets `not_found`, the same as for a file that does not exist.
- Delete: the owner only. The file goes, with every message's link to it; its bytes go once no file
  and no document refers to them (on SQLite, zeroed on disk like any erased data).
- Limits: a file's size (25 MiB by default), what an agent's files and documents hold in all (a
  quota), and the upload rate (a rate class of its own).
"""

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

import anyio
from sqlalchemy import Connection, RowMapping

from protocol import ids
from protocol.errors import InvalidRequest, NotFound, PayloadTooLarge, QuotaExceeded
from protocol.files import DeletedFile, FileInfo, FilePage, ListFilesParams, UploadFileParams
from storage.queries import files as file_queries
from storage.queries import jobs as job_queries
from storage.queries import usage as usage_queries
from storage.store import Store

from ..clock import Clock
from ..config import Settings
from ..jobs import JobKind, JobRunner, Work
from ..media import SNIFF_BYTES, sniff
from ..usage import storage_quota
from . import cursors
from .timeline import erase_attachment

EXPIRE_JOB: Final = "files.expire"


class Upload(Protocol):
    """An uploaded file's bytes, spooled by the transport that received them."""

    filename: str
    size: int

    def chunks(self, size: int) -> Iterator[bytes]:
        """The bytes from the start, `size` at a time (blocking reads: call it in a worker thread)."""
        ...


@dataclass(frozen=True)
class BytesUpload:
    """An upload already in memory (a base64 field of a JSON request: small by its limit)."""

    filename: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self, size: int) -> Iterator[bytes]:
        for start in range(0, len(self.data), size):
            yield self.data[start:start + size]


def file_not_found(file_id: str) -> NotFound:
    return NotFound(f"no file {file_id!r}", {"file_id": file_id})


def file_of(row: RowMapping) -> FileInfo:
    return FileInfo(file_id=row["id"], name=row["name"], size=row["size"], media_type=row["media_type"],
                    sha256=row["sha256"], owner_id=row["owner_id"], created_at=row["created_at"],
                    expires_at=row["expires_at"])


def readable_file(conn: Connection, file_id: str, agent_id: str, now: datetime) -> RowMapping:
    """The file, if the agent may read it.

    Raises:
        NotFound: no such file (or expired), or not the agent's to read: the same error either way.
    """
    row = file_queries.get_file(conn, file_id)
    if row is None or (row["expires_at"] is not None and row["expires_at"] <= now):
        raise file_not_found(file_id)
    if row["owner_id"] != agent_id and not file_queries.carried_to(conn, file_id, agent_id):
        raise file_not_found(file_id)
    return row


def check_storage_quota(conn: Connection, settings: Settings, agent_id: str, more: int) -> None:
    """Raises QuotaExceeded when the agent's files and documents cannot hold `more` bytes."""
    used = sum(usage_queries.storage_used(conn, agent_id, kind)[1]
               for kind in (usage_queries.FILES, usage_queries.DOCUMENTS))
    quota = storage_quota(conn, settings, agent_id)
    if used + more > quota:
        raise QuotaExceeded(f"your files and documents may hold {quota} bytes in all; {used} are used and this "
                            f"needs {more} more: delete what you no longer need", quota="storage_bytes",
                            limit=quota, used=used)


@dataclass(frozen=True)
class Digest:
    sha256: str
    size: int
    media_type: str


def digest(upload: Upload) -> Digest:
    """Hash and sniff an upload (blocking: reads it once, in chunks)."""
    sha = hashlib.sha256()
    head = b""
    for chunk in upload.chunks(file_queries.CHUNK_BYTES):
        if len(head) < SNIFF_BYTES:
            head += chunk[: SNIFF_BYTES - len(head)]
        sha.update(chunk)
    return Digest(sha.hexdigest(), upload.size, sniff(head, upload.filename))


@dataclass(frozen=True)
class FileContent:
    """What a download serves: the file, and its bytes from `start` to `end` (inclusive)."""

    info: FileInfo
    start: int
    end: int
    chunks: AsyncIterator[bytes]


class FileService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, jobs: JobRunner) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._jobs = jobs

    def expiry_job(self) -> JobKind:
        return JobKind(EXPIRE_JOB, self._expire, batch=20)

    async def upload(self, caller_id: str, params: UploadFileParams, upload: Upload | None) -> FileInfo:
        if upload is None:
            upload = self._inline(params)
        elif params.content_base64 is not None:
            raise InvalidRequest("give the file as a multipart part or as content_base64, not both",
                                 {"field": "content_base64"})
        limit = self._settings.max_file_bytes
        if upload.size > limit:
            raise PayloadTooLarge(f"a file is limited to {limit} bytes", {"max_bytes": limit, "bytes": upload.size})
        found = await anyio.to_thread.run_sync(digest, upload)
        now = self._clock.now()
        expires_at = now + timedelta(seconds=params.expires_in_seconds) if params.expires_in_seconds else None
        row = {"id": ids.new_id(ids.FILE), "owner_id": caller_id, "name": params.name, "size": found.size,
               "media_type": found.media_type, "sha256": found.sha256, "created_at": now, "expires_at": expires_at}

        def write(conn: Connection) -> None:
            check_storage_quota(conn, self._settings, caller_id, found.size)
            file_queries.put_blob(conn, found.sha256, found.size, upload.chunks(file_queries.CHUNK_BYTES), now)
            file_queries.insert_file(conn, row)
            usage_queries.add_storage(conn, caller_id, usage_queries.FILES, 1, found.size)
            if expires_at is not None:
                job_queries.ensure(conn, EXPIRE_JOB, row["id"], {}, expires_at, now)

        await self._store.write(write)
        return file_of(row)  # type: ignore[arg-type]

    def _inline(self, params: UploadFileParams) -> BytesUpload:
        if params.content_base64 is None:
            raise InvalidRequest("give the file's bytes in content_base64 (or upload it as multipart over REST)",
                                 {"field": "content_base64"})
        limit = self._settings.max_inline_file_bytes
        if len(params.content_base64) > 4 * ((limit + 2) // 3):
            raise PayloadTooLarge(f"a file sent as base64 is limited to {limit} bytes; upload larger ones "
                                  "as multipart to POST /api/files", {"max_bytes": limit})
        try:
            data = base64.b64decode(params.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("content_base64 is not valid base64", {"field": "content_base64"}) from None
        return BytesUpload(params.name, data)

    async def get(self, caller_id: str, file_id: str) -> FileInfo:
        now = self._clock.now()
        return await self._store.read(lambda conn: file_of(readable_file(conn, file_id, caller_id, now)))

    async def list_files(self, caller_id: str, params: ListFilesParams) -> FilePage:
        position = cursors.decode(params.cursor, str)

        def read(conn: Connection) -> FilePage:
            rows = file_queries.files_of(conn, caller_id, after_id=position[0] if position else None,
                                         limit=params.limit + 1)
            more = len(rows) > params.limit
            rows = rows[: params.limit]
            return FilePage(items=[file_of(row) for row in rows],
                            next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

        return await self._store.read(read)

    async def delete(self, caller_id: str, file_id: str) -> DeletedFile:
        now = self._clock.now()

        def write(conn: Connection) -> None:
            row = readable_file(conn, file_id, caller_id, now)
            if row["owner_id"] != caller_id:
                raise file_not_found(file_id)  # who may read it but not own it learns no more than that
            self._remove(conn, row)

        await self._store.write(write)
        await self._store.finish_erasure()
        return DeletedFile(file_id=file_id)

    @staticmethod
    def _remove(conn: Connection, row: RowMapping) -> None:
        erase_attachment(conn, row["id"])
        file_queries.delete_file(conn, row["id"])
        file_queries.drop_blob_if_unused(conn, row["sha256"])
        usage_queries.add_storage(conn, row["owner_id"], usage_queries.FILES, -1, -row["size"])
        job_queries.cancel(conn, EXPIRE_JOB, row["id"])

    async def _expire(self, work: Work) -> None:
        def remove(conn: Connection, held: list) -> None:  # type: ignore[type-arg]
            for job in held:
                row = file_queries.get_file(conn, job.subject)
                if row is not None:
                    self._remove(conn, row)

        await work.complete(work.jobs, remove)
        await self._store.finish_erasure()

    async def content(self, caller_id: str, file_id: str, first: int | None, last: int | None) -> FileContent:
        """A file's bytes for a download, `first`..`last` (inclusive, either may be None: from the start, to
        the end; a negative `first` with no `last` is the last -first bytes).

        Raises:
            NotFound: as `get`.
            InvalidRequest: the range lies outside the file (`details.size` says how big it is).
        """
        info = await self.get(caller_id, file_id)
        start, end = _resolve(first, last, info.size)
        chunk = file_queries.CHUNK_BYTES
        sha256 = info.sha256

        async def chunks() -> AsyncIterator[bytes]:
            if info.size == 0:
                return
            for seq in range(start // chunk, end // chunk + 1):
                data = (await self._store.read(lambda conn, seq=seq: file_queries.blob_chunks_for(
                    conn, sha256, seq, seq)))[0]
                low = start - seq * chunk if seq == start // chunk else 0
                high = end - seq * chunk + 1 if seq == end // chunk else len(data)
                yield data[low:high]

        return FileContent(info, start, end, chunks())


def _resolve(first: int | None, last: int | None, size: int) -> tuple[int, int]:
    if first is None and last is None:
        return 0, max(size - 1, 0)
    if first is not None and first < 0:
        return max(size + first, 0), size - 1
    start = first or 0
    end = min(last if last is not None else size - 1, size - 1)
    if start >= size or end < start:
        raise InvalidRequest(f"the range is outside the file ({size} bytes)", {"size": size})
    return start, end
