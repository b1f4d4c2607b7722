"""With `parley serve --workers N`, every request of an MCP session reaches the worker that holds it.

A 2025-11-25 streamable-HTTP session lives in the worker that answered its `initialize`. The kernel
gives each new connection to any worker (`SO_REUSEPORT`), and a client opens several (its POSTs, its
GET stream), so without routing a session's requests reach workers that do not hold it and get 404
(session not found): 29 of 30 tool calls failed in one measured run. So each worker hands out session
ids prefixed with its number (`2.` and the SDK's id), and a request for another worker's session is
forwarded whole over that worker's private Unix socket, its answer streamed back as it comes (an SSE
stream stays open for as long as the client holds it). The owner checks the credential itself, as
for any request. The 2026-07-28 protocol keeps no session and is never forwarded.

The sockets are in a directory only the hub's user can open, made by the parent process; each worker
serves the same app on its socket as on the port.
"""

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import httpx
from mcp.server.streamable_http_manager import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_HEADER: Final = b"mcp-session-id"
MAX_WORKER_DIGITS: Final = 4
"""A session id's worker number has at most this many digits; a longer one is no worker's."""
FORWARD_CONNECT_SECONDS: Final = 5.0
KEEPALIVE_SECONDS: Final = 2.0
_SOCKET_NAME: Final = re.compile(r"worker-(\d+)\.sock")
_HOP_BY_HOP: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade",
                                b"proxy-connection", b"content-length"})
"""Not forwarded either way: each connection's own framing (httpx and the server set their own)."""
_NOT_RELAYED: Final = _HOP_BY_HOP | {b"date", b"server"}
"""Not relayed from the owner's answer: the framing, and what the relaying server adds itself."""


@dataclass(frozen=True)
class Workers:
    """This worker's number and the directory of every worker's socket (`worker-N.sock`)."""

    number: int
    directory: Path

    @staticmethod
    def socket_name(number: int) -> str:
        return f"worker-{number}.sock"

    @classmethod
    def of_socket(cls, path: str) -> "Workers":
        """The workers a worker belongs to, from the path of its own socket."""
        found = _SOCKET_NAME.fullmatch(Path(path).name)
        if found is None:
            raise ValueError(f"not a worker's socket: {path}")
        return cls(int(found[1]), Path(path).parent)


class SessionRouter:
    """ASGI: serve this worker's sessions with `app` (their ids prefixed on the way out, bare on the way in);
    forward another worker's to it. Run `running()` around its use: it holds a client for each peer."""

    def __init__(self, app: ASGIApp, workers: Workers) -> None:
        self._app = app
        self._workers = workers
        self._prefix = f"{workers.number}.".encode()
        self._peers: dict[int, httpx.AsyncClient] = {}
        self._exits: AsyncExitStack | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as exits:
            self._exits = exits
            try:
                yield
            finally:
                self._exits = None
                self._peers.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner, _, local_id = (_header(scope, SESSION_HEADER) or b"").partition(b".")
        number = int(owner) if local_id and owner.isdigit() and len(owner) <= MAX_WORKER_DIGITS else None
        if number == self._workers.number:
            headers = [(name, local_id if name == SESSION_HEADER else value) for name, value in scope["headers"]]
            await self._app({**scope, "headers": headers}, receive, self._prefixing(send))
        elif number is not None and (peer := self._peer(number)) is not None:
            await self._forward(peer, scope, receive, send)
        else:  # a new session, or an id of no worker's: the session manager answers as for any unknown id
            await self._app(scope, receive, self._prefixing(send))

    def _prefixing(self, send: Send) -> Send:
        async def prefixed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    (name, self._prefix + value if name == SESSION_HEADER else value)
                    for name, value in message.get("headers", ())]}
            await send(message)

        return prefixed

    async def _forward(self, peer: httpx.AsyncClient, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the request to the worker `peer` reaches and relay its answer; stop when the client goes away.

        The body is read first (it is one JSON-RPC message, at most the SDK's limit): a client that is
        slow to send it then holds nothing of the owner's, and its leaving is noticed in one place.
        """
        try:
            body = await _read_body(receive)
        except _ClientLeft:
            return
        except _TooLarge:
            await _plain(send, 413, b"Request body too large")  # the SDK's own answer
            return
        url = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope["query_string"] else "")
        headers = [(name, value) for name, value in scope["headers"] if name not in _HOP_BY_HOP]
        async with anyio.create_task_group() as tg:

            async def client_left() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(client_left)
            request = peer.build_request(scope["method"], url, headers=headers, content=body or None)
            try:
                response = await peer.send(request, stream=True)
            except httpx.TransportError:
                await _plain(send, 503, b"the worker holding this MCP session does not answer")
                tg.cancel_scope.cancel()
                return
            try:
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": [(name.lower(), value) for name, value in response.headers.raw
                                        if name.lower() not in _NOT_RELAYED]})
                async with aclosing(response.aiter_raw()) as chunks:  # closed here when the client leaves
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except httpx.TransportError:  # the owner went away mid-answer: the client's connection ends too
                pass
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            tg.cancel_scope.cancel()

    def _peer(self, number: int) -> httpx.AsyncClient | None:
        """A client for worker `number`'s socket (made on first use, closed with `running`); None for a
        number no worker has."""
        if number in self._peers:
            return self._peers[number]
        path = self._workers.directory / Workers.socket_name(number)
        if self._exits is None or not path.exists():
            return None
        # No read timeout: a forwarded GET is an SSE stream that lasts as long as its session. No cap on
        # connections: each such stream holds one. Idle ones are let go before the servers' own 5 s.
        transport = httpx.AsyncHTTPTransport(
            uds=str(path), limits=httpx.Limits(max_connections=None, keepalive_expiry=KEEPALIVE_SECONDS))
        timeout = httpx.Timeout(None, connect=FORWARD_CONNECT_SECONDS, pool=FORWARD_CONNECT_SECONDS)
        client = httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=timeout)
        self._exits.push_async_callback(client.aclose)
        self._peers[number] = client
        return client


async def _read_body(receive: Receive) -> bytes:
    """The request's body, at most `DEFAULT_MAX_REQUEST_BODY_SIZE` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > DEFAULT_MAX_REQUEST_BODY_SIZE:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _ClientLeft(Exception):
    """The client disconnected before its request's body was all read."""


class _TooLarge(Exception):
    """The request's body is larger than the session manager takes."""


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def _plain(send: Send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": text})
