"""A minimal WebSocket client on anyio streams and wsproto: runs under asyncio and trio alike.

One task may call `receive` at a time; `send_text` may be called from any task (writes are
serialised by a lock). Pings are answered inside `receive`.
"""

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

CONNECT_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0
READ_CHUNK: Final = 65536


class ConnectionClosed(Exception):
    """The connection is closed; `code` and `reason` are what the peer (or we) sent."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"WebSocket closed ({code}): {reason}")
        self.code = code
        self.reason = reason


@dataclass
class HandshakeRejected(Exception):
    """The server answered the upgrade with an HTTP response instead of a WebSocket."""

    status: int
    body: bytes

    def __str__(self) -> str:
        return f"WebSocket upgrade refused with HTTP {self.status}: {self.body[:200]!r}"


class WebSocketConnection:
    def __init__(self, stream: ByteStream, protocol: WSConnection) -> None:
        self._stream = stream
        self._protocol = protocol
        self._send_lock = anyio.Lock()
        self._pending: list[str | bytes] = []
        self._fragments: list[str] | list[bytes] = []
        self._unread: list[object] = []
        """Events that came with the handshake's answer (a server may ping or write at once)."""
        self.closed: ConnectionClosed | None = None

    @classmethod
    async def connect(cls, url: str, headers: dict[str, str] | None = None) -> "WebSocketConnection":
        """Open a `ws://` connection to `url`.

        Raises:
            HandshakeRejected: the server refused the upgrade (e.g. 401 for a bad credential).
            OSError, TimeoutError: the server could not be reached in time.
        """
        parts = urlsplit(url)
        if parts.scheme != "ws" or parts.hostname is None:
            raise ValueError(f"expected a ws:// URL, got {url!r}")
        port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        with anyio.fail_after(CONNECT_TIMEOUT):
            stream = await anyio.connect_tcp(parts.hostname, port)
            try:
                protocol = WSConnection(ConnectionType.CLIENT)
                extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
                request = Request(host=f"{parts.hostname}:{port}", target=target, extra_headers=extra)
                await stream.send(protocol.send(request))
                connection = cls(stream, protocol)
                await connection._handshake()
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
        return connection

    async def _handshake(self) -> None:
        status, body = 0, b""
        while True:
            try:
                events = await self._read_events()
            except RemoteProtocolError as exc:
                raise OSError(f"the server broke off the WebSocket handshake: {exc}") from None
            for i, event in enumerate(events):
                if isinstance(event, AcceptConnection):
                    self._unread = events[i + 1:]
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise HandshakeRejected(status, b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        await self._stream.aclose()
                        raise HandshakeRejected(status, body)

    async def _read_events(self) -> list[object]:
        if self._unread:
            events, self._unread = self._unread, []
            return events
        try:
            data = await self._stream.receive(READ_CHUNK)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            data = None
        self._protocol.receive_data(data)
        return list(self._protocol.events())

    async def receive(self) -> str | bytes:
        """The next whole message.

        Raises:
            ConnectionClosed: the connection closed (the close code says why).
        """
        while not self._pending:
            if self.closed is not None:
                raise self.closed
            for event in await self._read_events():
                if isinstance(event, TextMessage | BytesMessage):
                    self._fragments.append(event.data)  # type: ignore[arg-type]
                    if event.message_finished:
                        self._pending.append(type(event.data)().join(self._fragments))  # type: ignore[arg-type]
                        self._fragments = []
                elif isinstance(event, Ping) and self._protocol.state.name == "OPEN":  # not once closing
                    await self._send_bytes(self._protocol.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = ConnectionClosed(event.code, event.reason or "")
                    if self._protocol.state.name == "REMOTE_CLOSING":
                        await self._send_bytes(self._protocol.send(event.response()))
                    await self._stream.aclose()
            if not self._pending and self.closed is None and self._protocol.state.name == "CLOSED":
                self.closed = ConnectionClosed(1006, "connection lost")
        return self._pending.pop(0)

    async def send_text(self, text: str) -> None:
        if self.closed is not None:
            raise self.closed
        await self._send_bytes(self._protocol.send(TextMessage(data=text)))

    async def _send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.closed = self.closed or ConnectionClosed(1006, "connection lost")
                raise self.closed from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and wait (briefly) for the peer's; always releases the socket."""
        try:
            if self.closed is None and self._protocol.state.name == "OPEN":
                await self._send_bytes(self._protocol.send(CloseConnection(code=code, reason=reason)))
                with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    while self.closed is None:
                        await self.receive()
        except ConnectionClosed:
            pass
        finally:
            self.closed = self.closed or ConnectionClosed(code, reason)
            await self._stream.aclose()
