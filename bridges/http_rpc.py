"""JSON-RPC 2.0 over HTTP POST at /rpc: one request or a batch per body.

JSON-RPC outcomes, errors included, are HTTP 200 (204 when the body held only notifications).
HTTP statuses are kept for what happens before JSON-RPC: 401 for a refused credential, 413 for a
body over the limit, 415 for a body that does not say it is JSON.
"""

from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from hub.core import Hub
from protocol import jsonrpc
from protocol.errors import HubError, PayloadTooLarge, UnsupportedMediaType

from .credentials import address_of, principal_from
from .jsonrpc import Framing
from .jsonrpc import Request as RpcRequest

DISCARD_BYTES: Final = 8 * 1024 * 1024
DISCARD_SECONDS: Final = 2.0


async def _discard_rest(stream: AsyncIterator[bytes], received: int) -> None:
    """Read and drop what is left of a refused body, within bounds. A client still sending its body
    reads no response before it has sent it all; a server that answers and closes with the body
    unread resets the connection, and the client sees "disconnected" instead of the 413."""
    with anyio.move_on_after(DISCARD_SECONDS):
        try:
            async for chunk in stream:
                received += len(chunk)
                if received > DISCARD_BYTES:
                    return
        except ClientDisconnect:
            return


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) one over `limit` bytes without keeping more than `limit`."""
    too_large = PayloadTooLarge(f"the body is larger than {limit} bytes", {"max_bytes": limit})
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DISCARD_BYTES:
            await _discard_rest(request.stream(), 0)
        raise too_large
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            await _discard_rest(stream, size)
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def error_response(error: HubError, headers: dict[str, str] | None = None) -> JSONResponse:
    """A transport-level failure of /rpc, as a JSON-RPC error with the matching HTTP status."""
    return JSONResponse(jsonrpc.failure(None, error), status_code=error.http_status, headers=headers)


def is_json(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def rpc_endpoint(request: Request) -> Response:
    hub: Hub = request.state.hub
    framing: Framing = request.state.framing
    try:
        if not is_json(request.headers.get("content-type", "")):
            raise UnsupportedMediaType("send the JSON-RPC payload as application/json")
        body = await read_body(request, hub.settings.max_body_bytes)
        caller = await principal_from(hub, request.headers, address_of(request.client))
    except HubError as error:
        return error_response(error, {"WWW-Authenticate": "Bearer"} if error.http_status == 401 else None)

    async def execute(call: RpcRequest) -> Any:
        return await hub.dispatch_model(caller, call.method, call.params)

    response: Any = None
    async with anyio.create_task_group() as tg:

        async def stop_when_the_client_leaves() -> None:
            await until_disconnected(request)
            tg.cancel_scope.cancel()  # nobody will read the answer (a write already queued still commits)

        tg.start_soon(stop_when_the_client_leaves)
        response = await framing.respond(body, execute)
        tg.cancel_scope.cancel()
    if response is None:
        return Response(status_code=204)  # only notifications; or the client has gone and reads nothing
    return Response(response, media_type="application/json")


async def until_disconnected(request: Request) -> None:
    """Return when the client disconnects. Only once the body has been read: then the next ASGI
    message is the disconnect, so a long poll (`events.list` with `timeout`) ends with its caller."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


