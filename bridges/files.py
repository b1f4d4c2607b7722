"""Files over REST: multipart uploads streamed to a temporary file, and downloads with ranges.

An upload (`POST /api/files`, `multipart/form-data` with a `file` part) is parsed by Starlette, which
spools the part to a temporary file (in memory up to 1 MiB, then on disk): the request body is never
held whole in memory, and it is refused (413) as soon as it passes the file limit. The file then goes
through `Hub.dispatch` like any operation (`files.upload`, with the upload beside its params).

A download (`GET /api/files/{id}/content`) serves the bytes with the sniffed `Content-Type`, an
`ETag` (the SHA-256: `If-None-Match` answers 304), `Content-Disposition` with the file's name, and
single byte ranges (`Range: bytes=…`, 206; 416 outside the file).
"""

import re
from collections.abc import Iterator
from typing import IO, Final
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive

from hub.core import Hub
from protocol.errors import HubError, InvalidRequest, PayloadTooLarge

from .credentials import address_of, principal_from
from .http_errors import error_response

MULTIPART_OVERHEAD: Final = 64 * 1024
"""What a multipart body may hold besides the file: boundaries, headers, a few small fields."""
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class SpooledUpload:
    """A Starlette upload as the hub's `Upload`: its spooled file, read from the start."""

    def __init__(self, upload: UploadFile) -> None:
        self.filename = upload.filename or "upload"
        self._file: IO[bytes] = upload.file
        self._file.seek(0, 2)
        self.size = self._file.tell()

    def chunks(self, size: int) -> Iterator[bytes]:
        self._file.seek(0)
        while chunk := self._file.read(size):
            yield chunk


def limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising PayloadTooLarge once the body passes `limit` bytes."""
    received = 0

    async def receive_within() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLarge(f"a file is limited to {limit - MULTIPART_OVERHEAD} bytes",
                                  {"max_bytes": limit - MULTIPART_OVERHEAD})
        return message

    return receive_within


async def upload_params(request: Request, hub: Hub) -> tuple[dict[str, str], SpooledUpload]:
    """The fields of a multipart upload and its file.

    Raises:
        PayloadTooLarge: the body passes the file limit (refused as soon as it does).
        InvalidRequest: a body that is not multipart as it says, more than one file or ten fields, or no
            `file` part.
    """
    limit = hub.settings.max_file_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"a file is limited to {hub.settings.max_file_bytes} bytes",
                              {"max_bytes": hub.settings.max_file_bytes})
    bounded = Request(request.scope, receive=limited(request.receive, limit))
    try:
        form = await bounded.form(max_files=1, max_fields=10)
    except HTTPException as error:  # Starlette's own 400, in text/plain, for a body it cannot parse
        raise InvalidRequest(f"the multipart body could not be read: {error.detail}", {"field": "file"}) from None
    part = form.get("file")
    if not isinstance(part, UploadFile):
        raise InvalidRequest("send the file as a multipart part named `file`", {"field": "file"})
    upload = SpooledUpload(part)
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    params.setdefault("name", upload.filename)
    return params, upload


def _byte_range(header: str | None) -> tuple[int | None, int | None]:
    """(first, last) of a single `bytes=` range; (None, None) for none. `bytes=-n` is (-n, None)."""
    if not header:
        return None, None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        raise InvalidRequest("only one range, `bytes=first-last`, is served", {"field": "range"})
    first, last = match.group(1), match.group(2)
    if not first:
        return -int(last), None
    return int(first), int(last) if last else None


async def file_content(request: Request) -> Response:
    hub: Hub = request.state.hub
    try:
        caller = await principal_from(hub, request.headers, address_of(request.client))
        first, last = _byte_range(request.headers.get("range"))
        content = await hub.file_content(caller, request.path_params["file_id"], first, last)
    except InvalidRequest as error:
        if "size" in error.details:  # a range outside the file
            return JSONResponse({"error": error.to_dict()}, status_code=416,
                                headers={"Content-Range": f"bytes */{error.details['size']}"})
        return error_response(error)
    except HubError as error:
        return error_response(error)
    info = content.info
    etag = f'"{info.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(info.name)}",
        "Content-Length": str(content.end - content.start + 1 if info.size else 0),
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    partial = request.headers.get("range") is not None
    if partial:
        headers["Content-Range"] = f"bytes {content.start}-{content.end}/{info.size}"
    return StreamingResponse(content.chunks, status_code=206 if partial else 200, media_type=info.media_type,
                             headers=headers)


def file_routes() -> list[Route]:
    return [Route("/api/files/{file_id}/content", file_content, methods=["GET"])]
