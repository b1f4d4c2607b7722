"""A small Server-Sent Events reader on a raw anyio socket (HTTP/1.1, chunked or not).

httpx can read SSE, but leaving an endless stream early strands its inner async generators, which
trio reports as unraisable ResourceWarnings. A socket we own closes cleanly on both backends.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
from anyio.abc import ByteStream


@dataclass
class SSEResponse:
    status: int
    headers: dict[str, str]
    _stream: ByteStream
    _buffer: bytes = b""
    _chunked: bool = False
    _body_left: int = 0
    _lines: list[str] = field(default_factory=list)

    async def _fill(self) -> None:
        self._buffer += await self._stream.receive()

    async def _read_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            await self._fill()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    async def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def _body_chunk(self) -> bytes:
        if not self._chunked:
            data, self._buffer = self._buffer, b""
            return data or await self._stream.receive()
        size = int((await self._read_line()).split(b";")[0], 16)
        if size == 0:
            raise anyio.EndOfStream
        data = await self._read_exact(size)
        await self._read_line()
        return data

    async def body(self) -> bytes:
        """The whole body of a non-streaming (error) response."""
        length = int(self.headers.get("content-length", "0"))
        return await self._read_exact(length)

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """SSE messages as field dicts; comment lines come as {"comment": text}."""
        pending = ""
        fields: dict[str, Any] = {}
        while True:
            try:
                pending += (await self._body_chunk()).decode()
            except anyio.EndOfStream:
                return
            *lines, pending = pending.split("\n")
            for line in lines:
                if line == "":
                    if fields:
                        yield fields
                    fields = {}
                elif line.startswith(":"):
                    yield {"comment": line[1:].strip()}
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value


@asynccontextmanager
async def open_sse(base_url: str, path: str, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None) -> AsyncIterator[SSEResponse]:
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None
    target = path + ("?" + urlencode(params) if params else "")
    request_headers = {"host": f"{url.hostname}:{url.port}", "accept": "text/event-stream", **(headers or {})}
    async with await anyio.connect_tcp(url.hostname, url.port) as stream:
        head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request_headers.items()) + "\r\n"
        await stream.send(head.encode())
        response = SSEResponse(status=0, headers={}, _stream=stream)
        response.status = int((await response._read_line()).split()[1])
        while line := await response._read_line():
            name, _, value = line.decode().partition(":")
            response.headers[name.strip().lower()] = value.strip()
        response._chunked = response.headers.get("transfer-encoding", "").lower() == "chunked"
        yield response
