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
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_HEADER: Final = b"mcp-session-id"
FORWARD_CONNECT_SECONDS: Final = 5.0
_SOCKET_NAME: Final = re.compile(r"worker-(\d+)\.sock")
_HOP_BY_HOP: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade",
                                b"proxy-connection", b"content-length"})
"""Not forwarded either way: each connection's own framing (httpx and the server set their own)."""


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
        session = _header(scope, SESSION_HEADER)
        owner, _, local_id = (session or b"").partition(b".")
        if session is None or not local_id or not owner.isdigit():
            await self._app(scope, receive, self._prefixing(send))  # a new session, or an id of no worker's
        elif int(owner) == self._workers.number:
            headers = [(name, local_id if name == SESSION_HEADER else value) for name, value in scope["headers"]]
            await self._app({**scope, "headers": headers}, receive, self._prefixing(send))
        else:
            await self._forward(int(owner), scope, receive, send)

    def _prefixing(self, send: Send) -> Send:
        async def prefixed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    (name, self._prefix + value if name == SESSION_HEADER else value)
                    for name, value in message.get("headers", ())]}
            await send(message)

        return prefixed

    async def _forward(self, owner: int, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the request to the worker `owner` and relay its answer; stop when the client goes away."""
        client = self._peer(owner)
        if client is None:
            await _plain(send, 404, b"no such MCP session")  # the number of no worker: an id made up
            return
        request_done = anyio.Event()

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientLeft
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    request_done.set()
                    return

        url = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope["query_string"] else "")
        headers = [(name, value) for name, value in scope["headers"] if name not in _HOP_BY_HOP]
        async with anyio.create_task_group() as tg:

            async def client_left() -> None:
                await request_done.wait()
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(client_left)
            has_body = scope["method"] in ("POST", "PUT", "PATCH")
            if not has_body:
                request_done.set()
            request = client.build_request(scope["method"], url, headers=headers, content=body() if has_body else None)
            try:
                response = await client.send(request, stream=True)
            except _ClientLeft:  # mid-body: nothing to answer
                tg.cancel_scope.cancel()
                return
            except httpx.TransportError:
                await _plain(send, 503, b"the worker holding this MCP session does not answer")
                tg.cancel_scope.cancel()
                return
            try:
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": [(name, value) for name, value in response.headers.raw
                                        if name.lower() not in _HOP_BY_HOP]})
                async for chunk in response.aiter_raw():
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
        # No read timeout: a forwarded GET is an SSE stream that lasts as long as its session.
        timeout = httpx.Timeout(None, connect=FORWARD_CONNECT_SECONDS, pool=FORWARD_CONNECT_SECONDS)
        client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url="http://worker",
                                   timeout=timeout)
        self._exits.push_async_callback(client.aclose)
        self._peers[number] = client
        return client


class _ClientLeft(Exception):
    """The client disconnected before its request's body was all read."""


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def _plain(send: Send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": text})
