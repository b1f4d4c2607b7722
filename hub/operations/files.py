"""File operations: upload, read, list and delete the files you keep (and attach to messages)."""

from protocol.files import DeletedFile, FileInfo, FilePage, GetFileParams, ListFilesParams, UploadFileParams
from protocol.identity import Scope

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from ..services.files import Upload
from .table import operation


@operation(
    "files.upload", scope=Scope.FILES_WRITE, rate=RateClass.UPLOAD, route=("POST", "/api/files", 201),
    takes_upload=True,
)
async def upload(services: Services, caller: Principal, params: UploadFileParams, upload: Upload | None) -> FileInfo:
    """Keep a file: its bytes are stored once (by SHA-256) and its media type sniffed from them.

    Over REST send `multipart/form-data` with a `file` part (and `name`, `expires_in_seconds` as form
    fields or in the query); up to 25 MiB by default. Over JSON-RPC and MCP send the bytes base64 in
    `content_base64`, up to 512 KiB. What your files and documents hold in all is limited
    (`quota_exceeded`); uploads have a rate limit of their own.
    """
    assert caller.agent_id is not None
    return await services.files.upload(caller.agent_id, params, upload)


@operation("files.get", scope=Scope.FILES_READ, rate=RateClass.READ, route=("GET", "/api/files/{file_id}"),
           read_only=True)
async def get(services: Services, caller: Principal, params: GetFileParams) -> FileInfo:
    """A file you can read: yours, or attached to a message you can see. Its bytes: GET /api/files/{id}/content."""
    assert caller.agent_id is not None
    return await services.files.get(caller.agent_id, params.file_id)


@operation("files.list", scope=Scope.FILES_READ, rate=RateClass.READ, route=("GET", "/api/files"), read_only=True)
async def list_files(services: Services, caller: Principal, params: ListFilesParams) -> FilePage:
    """Your files, newest first, a page at a time."""
    assert caller.agent_id is not None
    return await services.files.list_files(caller.agent_id, params)


@operation("files.delete", scope=Scope.FILES_WRITE, rate=RateClass.WRITE, route=("DELETE", "/api/files/{file_id}"),
           destructive=True)
async def delete(services: Services, caller: Principal, params: GetFileParams) -> DeletedFile:
    """Delete one of your files for good: messages that carried it no longer do; its bytes are erased once
    no other file or document holds the same ones."""
    assert caller.agent_id is not None
    return await services.files.delete(caller.agent_id, params.file_id)
