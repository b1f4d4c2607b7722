"""The client side of the WebSocket benchmarks: a lean WebSocket client, pipelined JSON-RPC, a real
hub to talk to, agents on it, and CPU/memory readings of the server process.

The client is not under test, so it is built to cost as little CPU as possible (two cores are
shared by client and server): a bare `asyncio.Protocol` per connection that frames by hand
(server frames are unmasked; our frames carry an all-zero mask, which RFC 6455 allows and which
makes masking a no-op), on uvloop. One object per connection, no task per connection, so ten
thousand idle connections cost the client little.

API (used by bench.send, bench.fanout, bench.connections; others may import it too):

- `run(coro)`: run a client coroutine on uvloop.
- `WsClient`, `open_ws(url, token=None, on_message=None)`, `open_many(url, tokens, concurrency)`.
- `Pipeline(conn, window).run(frames)`: send JSON-RPC frames with up to `window` in flight; latencies.
- `rpc_frame(request_id, method, params)`: one request as text; `call(conn, method, params)`: one call's
  result; `round_trip(conn, method, params)`: the answering frame (an echo server's too).
- `running_hub(backend, **settings)`: a started `parley serve` (tests/servers.py) in a temporary dir.
- `register_agents(server, count, stem)`: agents with access tokens (tests/client.py's HubClient).
- `ProcessMeter`: CPU seconds of the client and of a server process over a phase; `rss_kib(pid)`;
  `until_idle(pid)`: wait until a server process is done with what it was doing.
"""

import asyncio
import base64
import itertools
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import httpx
import uvloop

from tests.client import Agent, HubClient
from tests.messaging import unlabelled_series
from tests.servers import HubServer, make_server

T = TypeVar("T")

OPEN_TIMEOUT: Final = 30.0
_ZERO_MASK: Final = b"\x00\x00\x00\x00"
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine on uvloop (the fastest loop there is for the client side)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class WsClosed(Exception):
    """The server closed the connection (code and reason as sent)."""


class WsClient(asyncio.Protocol):
    """One client WebSocket connection, framed by hand.

    `on_message(payload)` is called with every text or binary message as bytes, in order, from the
    event loop; pings are answered; a close frame is answered and ends the connection.
    """

    def __init__(self, request: bytes, on_message: Callable[[bytes], None] | None = None) -> None:
        self.on_message = on_message or (lambda payload: None)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._request = request
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self.opened.done():
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(self._buffer[: self._buffer.find(b"\r\n")])
            if b" 101 " not in status_line:
                self.opened.set_exception(ConnectionRefusedError(status_line.decode(errors="replace")))
                self._abort()
                return
            del self._buffer[: end + 4]
            self.opened.set_result(None)
        self._read_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result((1006, "connection lost"))

    # -- frames ----------------------------------------------------------------------------------
    def _read_frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start: start + length])
            del buffer[: start + length]
            if opcode in (0x1, 0x2):  # servers here never fragment the small frames we exchange
                self.on_message(payload)
            elif opcode == 0x9:
                self._write_frame(0xA, payload)
            elif opcode == 0x8:
                code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                if not self.closed.done():
                    self.closed.set_result((code, payload[2:].decode(errors="replace")))
                self._write_frame(0x8, payload[:2])
                self._abort()
                return

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        assert self._transport is not None
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        self._transport.write(header + _ZERO_MASK + payload)

    def send(self, text: str | bytes) -> None:
        """Queue one text frame (never blocks; the transport buffers)."""
        if self.closed.done():
            raise WsClosed(*self.closed.result())
        self._write_frame(0x1, text.encode() if isinstance(text, str) else text)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if not self.closed.done():
                self._write_frame(0x8, struct.pack("!H", 1000))
            self._transport.close()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _upgrade_request(host: str, port: int, path: str, token: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_ws(url: str, token: str | None = None, on_message: Callable[[bytes], None] | None = None) -> WsClient:
    """An open WebSocket to `ws://host:port/path`, authenticated at the upgrade with `token`."""
    parts = urlsplit(url)
    assert parts.scheme == "ws" and parts.hostname is not None and parts.port is not None, url
    request = _upgrade_request(parts.hostname, parts.port, parts.path or "/", token)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(OPEN_TIMEOUT):
        _, protocol = await loop.create_connection(lambda: WsClient(request, on_message), parts.hostname, parts.port)
        await protocol.opened
    return protocol


async def open_many(url: str, tokens: Sequence[str | None], concurrency: int = 100) -> list[WsClient]:
    """One connection per entry of `tokens`, at most `concurrency` handshakes at a time (a server's
    listen backlog is finite: hypercorn's is 100)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(token: str | None) -> WsClient:
        async with gate:
            return await open_ws(url, token)

    return list(await asyncio.gather(*(one(token) for token in tokens)))


# -- JSON-RPC ------------------------------------------------------------------------------------

def rpc_frame(request_id: int, method: str, params: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return json.dumps(body, separators=(",", ":"))


class RpcFailed(Exception):
    """A call the benchmark needs answered with an error."""


@dataclass
class Pipeline:
    """JSON-RPC calls on one connection with up to `window` requests in flight.

    Responses are matched by id; notifications (frames with a `method`) are ignored. Echo servers
    answer with the request itself, which has the same id, so the same driver measures a floor.
    """

    conn: WsClient
    window: int

    async def run(self, frames: Iterable[tuple[int, str]], count: int | None = None) -> list[float]:
        """Send every (id, text) frame (`count` of them: needed when `frames` is a generator, which
        builds each frame as it goes out); the latency in seconds of each answer, in answer order.

        Raises:
            RpcFailed: the server answered a request with an error.
            WsClosed: the connection closed before every answer came.
        """
        sent: dict[int, float] = {}
        latencies: list[float] = []
        errors: list[Any] = []
        slots = asyncio.Semaphore(self.window)
        done = asyncio.get_running_loop().create_future()
        expected = len(frames) if count is None else count  # type: ignore[arg-type]

        def on_message(payload: bytes) -> None:
            now = time.perf_counter()
            frame = json.loads(payload)
            if "method" in frame and "id" not in frame:
                return
            latencies.append(now - sent.pop(frame["id"]))
            if "error" in frame:
                errors.append(frame["error"])
            slots.release()
            if len(latencies) == expected and not done.done():
                done.set_result(None)

        self.conn.on_message = on_message
        for request_id, text in frames:
            await slots.acquire()
            sent[request_id] = time.perf_counter()
            self.conn.send(text)
        finished, _ = await asyncio.wait([done, self.conn.closed], return_when=asyncio.FIRST_COMPLETED)
        if done not in finished:
            raise WsClosed(*self.conn.closed.result())
        if errors:
            raise RpcFailed(f"{len(errors)} of {expected} calls failed; the first: {errors[0]}")
        return latencies


_call_ids = itertools.count(1_000_000_000)


async def round_trip(conn: WsClient, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one JSON-RPC request on `conn`; the frame that answers it (an echo server's is the request)."""
    request_id = next(_call_ids)
    answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def on_message(payload: bytes) -> None:
        frame = json.loads(payload)
        if frame.get("id") == request_id and not answer.done():
            answer.set_result(frame)

    previous, conn.on_message = conn.on_message, on_message
    try:
        conn.send(rpc_frame(request_id, method, params))
        async with asyncio.timeout(OPEN_TIMEOUT):
            return await answer
    finally:
        conn.on_message = previous


async def call(conn: WsClient, method: str, params: dict[str, Any] | None = None) -> Any:
    """One JSON-RPC call on `conn`; its result (RpcFailed for an error)."""
    frame = await round_trip(conn, method, params)
    if "error" in frame:
        raise RpcFailed(json.dumps(frame["error"]))
    return frame["result"]


async def gather_limited(coros: Iterator[Awaitable[T]] | Sequence[Awaitable[T]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


# -- the hub -------------------------------------------------------------------------------------

@contextmanager
def running_hub(backend: str, data_dir: Path | None = None, **settings: str) -> Iterator[HubServer]:
    """A real `parley serve` on SQLite, with the tests' settings (cheap argon2, generous rate limits)
    plus `settings` (PARLEY_* names without the prefix). In a temporary directory, or on the store in
    `data_dir`."""
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        server = make_server(backend, "sqlite", data_dir or Path(tmp), **settings)
        server.launch()
        try:
            yield server
        finally:
            code = server.stop()
            if code != 0:
                print(f"warning: the hub exited with {code}", file=sys.stderr)


async def register_agents(server: HubServer, count: int, stem: str = "bench") -> list[Agent]:
    """`count` new agents, each with a fresh access token (registration costs an argon2 hash)."""
    async with HubClient(server) as hub:
        return await gather_limited([hub.register(stem) for _ in range(count)], 8)


async def hub_call(server: HubServer, agent: Agent, method: str, params: dict[str, Any]) -> Any:
    """One call over HTTP JSON-RPC as `agent` (set-up work that is not measured)."""
    async with HubClient(server) as hub:
        return await hub.call(method, params, token=agent.access_token)


# -- measuring processes -------------------------------------------------------------------------

def _user_and_system_seconds(stat_path: str) -> tuple[float, float]:
    """User and system CPU time so far, from a process's or a thread's `/proc/…/stat`."""
    with open(stat_path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    return sum(_user_and_system_seconds(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, tuple[float, float]]:
    """Each thread of process `pid`, by thread id: its user and system CPU time so far."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            threads[int(tid)] = _user_and_system_seconds(f"/proc/{pid}/task/{tid}/stat")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return threads


def rss_kib(pid: int) -> int:
    """Resident memory of process `pid` (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def until_idle(pid: int, *, below: float = 0.05, window: float = 0.5, limit: float = 60.0) -> None:
    """Wait until process `pid` uses less than `below` of a core over `window` seconds (at most
    `limit` seconds): e.g. until a server has finished handling connections that were just closed."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        if cpu_seconds(pid) - before < below * window:
            return


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent on anything but idling and waiting for I/O, all cores."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


WRITER_COUNTERS: Final = ("parley_store_commits_total", "parley_store_writes_total",
                          "parley_store_writer_seconds_total", "parley_store_writer_cpu_seconds_total")


def writer_counters(server: HubServer) -> dict[str, float]:
    """The hub's store-writer counters, from its /metrics."""
    series = unlabelled_series(httpx.get(server.url + "/metrics", timeout=10).text)
    return {name: series[name] for name in WRITER_COUNTERS}


def writer_figures(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """What the hub's writer did between two `writer_counters`, `seconds` apart: writes per batch, the
    share of the time it was busy, and per write its wall time (waiting for the interpreter lock
    included) and its thread's CPU time. Wall well above CPU means the writer waits on the event loop."""
    commits, writes, wall, cpu = (after[name] - before[name] for name in WRITER_COUNTERS)
    if not writes:
        return {}
    return {"writes_per_batch": round(writes / commits, 1), "busy": round(wall / seconds, 2),
            "wall_us_per_write": round(1e6 * wall / writes), "cpu_us_per_write": round(1e6 * cpu / writes)}


class ProcessMeter:
    """Wall time and the CPU used by this (client) process, by the server's processes (one, or a
    `--workers` parent and its workers) and by the whole machine over a phase: which side was busy
    says which one limited the figure (a core is 1.0)."""

    def __init__(self, server_pid: int | Sequence[int]) -> None:
        self._pids = [server_pid] if isinstance(server_pid, int) else list(server_pid)
        self._wall = time.perf_counter()
        self._client = time.process_time()
        self._server = self._server_seconds()
        self._machine = machine_busy_seconds()
        self.elapsed = 0.0
        """The wall time up to the last `read`, unrounded: what a rate divides by (a quick phase can
        take under 5 ms, which the report's `seconds` rounds to 0)."""

    def _server_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self._pids)

    def read(self) -> dict[str, float]:
        wall = self.elapsed = time.perf_counter() - self._wall
        return {
            "seconds": round(wall, 2),
            "server_cores": round((self._server_seconds() - self._server) / wall, 2),
            "client_cores": round((time.process_time() - self._client) / wall, 2),
            "machine_cores": round((machine_busy_seconds() - self._machine) / wall, 2),
        }
