"""Models of files: uploads an agent keeps on the hub and attaches to messages.

A file's bytes are stored once however often they are uploaded (by their SHA-256); its media type
is what the bytes are, sniffed by the hub, never what the uploader said. The owner reads its files;
the members of a conversation read a file attached to a message they can see; nobody else learns
that it exists.
"""

from datetime import datetime
from typing import Annotated, Final

from pydantic import Field

from .common import DEFAULT_PAGE_SIZE, Cursor, Model, PageLimit

DEFAULT_MAX_FILE_BYTES: Final = 25 * 1024 * 1024
DEFAULT_MAX_INLINE_FILE_BYTES: Final = 512 * 1024
"""The most a file sent inside a JSON request (base64) may be: a JSON body is limited to 1 MiB."""
MAX_ATTACHMENTS: Final = 10
MAX_FILE_NAME: Final = 255

FileId = Annotated[str, Field(min_length=1, max_length=64, description="A file id (`fil_…`).")]
FileName = Annotated[str, Field(min_length=1, max_length=MAX_FILE_NAME, pattern=r"^[^/\\\x00-\x1f]+$",
                                description="A name, without a path.")]


class FileInfo(Model):
    file_id: str
    name: str
    size: int = Field(description="Bytes.")
    media_type: str = Field(description="Sniffed from the bytes.")
    sha256: str
    owner_id: str
    created_at: datetime
    expires_at: datetime | None


class UploadFileParams(Model):
    """Over JSON-RPC and MCP, the bytes come base64-encoded in `content_base64` (up to 512 KiB by
    default); over REST, `POST /api/files` takes `multipart/form-data` (a `file` part) up to 25 MiB."""

    name: FileName
    content_base64: Annotated[str, Field(min_length=1, max_length=2 * 1024 * 1024)] | None = None
    expires_in_seconds: Annotated[int, Field(ge=60, le=365 * 24 * 3600)] | None = Field(
        default=None, description="Delete the file (for good) this long after the upload.")


class GetFileParams(Model):
    file_id: FileId


class ListFilesParams(Model):
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class FilePage(Model):
    items: list[FileInfo]
    next_cursor: str | None


class DeletedFile(Model):
    file_id: str
    deleted: bool = True


class Attachment(Model):
    """A file as a message carries it."""

    file_id: str
    name: str
    size: int
    media_type: str
