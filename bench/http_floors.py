"""Shared pieces of the HTTP benchmarks (history, MCP, REST): a fast loopback client, the load loop,
the hub process, and the floor servers that run on the hub's own server stack.

Why a client of our own: httpx spends ~150 µs of Python per request, which on this 2-core machine
would make the client, not the server, the limit. `RawHttp` is one h11 connection on an anyio
socket (HTTP/1.1 keep-alive, Content-Length or chunked bodies), a few tens of µs per request.
Every load run records the CPU the server process and this client process used, so a report can
say which side was saturated.

Why floors run in a subprocess of their own: a floor must be "the same stack": the same ASGI server
with the same configuration, on the same event loop, in its own process on the same machine.
`serve_floor` builds a tiny app and hands it to `bridges.runner.serve_app` (uvicorn + uvloop on asyncio,
hypercorn in-process on trio), the exact code path `parley serve` takes; `tests/test_bench_floors.py`
checks that each floor starts.

    .venv/bin/python -m bench.http_floors --app rest|mcp --backend asyncio|trio --port P [--canned FILE]

(runs one floor server until SIGTERM; the benchmarks start it themselves.)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import h11
import httpx

from bench.clients import cpu_seconds
from bench.report import percentile
from tests.servers import HubServer, free_port

BACKENDS: Final = ("asyncio", "trio")
START_TIMEOUT: Final = 30.0


# -- the client -------------------------------------------------------------------------------------------


class RawHttp:
    """One keep-alive HTTP/1.1 connection: send a request, read the whole response (status, headers, body)."""

    def __init__(self, stream: anyio.abc.ByteStream, host: str, port: int) -> None:
        self._stream = stream
        self._address = (host, port)
        self._host = f"{host}:{port}".encode()
        self._conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> "RawHttp":
        return cls(await anyio.connect_tcp(host, port), host, port)

    async def _reconnect(self) -> None:
        """After a response that ends its connection (`Connection: close`, say on an error), open a new one."""
        await self._stream.aclose()
        self._stream = await anyio.connect_tcp(*self._address)
        self._conn = h11.Connection(h11.CLIENT)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def request(self, method: str, target: str, headers: Sequence[tuple[str, str]] = (),
                      body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        conn = self._conn
        head = [(b"host", self._host), *((k.encode(), v.encode()) for k, v in headers)]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append((b"content-length", str(len(body)).encode()))
        out = conn.send(h11.Request(method=method, target=target, headers=head))
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        await self._stream.send(out)
        status, response_headers, chunks = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self._stream.receive(65536))
            elif isinstance(event, h11.Response):
                status, response_headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                else:
                    await self._reconnect()
                return status, response_headers, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")


def json_headers(token: str | None = None, **extra: str) -> list[tuple[str, str]]:
    headers = [("content-type", "application/json")]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    return headers + [(name.replace("_", "-"), value) for name, value in extra.items()]


def expect(status: int, body: bytes, wanted: int = 200) -> bytes:
    """Fail loudly on a wrong status: a benchmark of error answers measures nothing."""
    if status != wanted:
        raise RuntimeError(f"HTTP {status} (expected {wanted}): {body[:500]!r}")
    return body


# -- the load loop ---------------------------------------------------------------------------------------

Request = Callable[[RawHttp, int], Awaitable[None]]
"""One request on a connection (the int is the worker's running count, for varying the request)."""


@dataclass
class Sample:
    """What one load run measured: latencies (s), completed requests, wall time, and CPU per side."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def ms(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000

    def cpu(self) -> dict[str, float]:
        """Cores busy on each side during the run (1.0 = one core saturated)."""
        return {"server_cores": round(self.server_cpu / self.elapsed, 2) if self.elapsed else 0.0,
                "client_cores": round(self.client_cpu / self.elapsed, 2) if self.elapsed else 0.0}

    def merge(self, other: "Sample") -> "Sample":
        return Sample(self.latencies + other.latencies, self.elapsed + other.elapsed,
                      self.server_cpu + other.server_cpu, self.client_cpu + other.client_cpu)


async def drive(port: int, server_pid: int, request: Request, *, concurrency: int, seconds: float,
                warmup: float = 0.3) -> Sample:
    """`concurrency` connections, each sending `request` back to back for `seconds` (after a warm-up)."""
    connections = [await RawHttp.connect(port) for _ in range(concurrency)]
    sample = Sample()
    try:
        async def worker(conn: RawHttp, deadline: float, record: bool) -> None:
            n = 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await request(conn, n)
                if record:
                    sample.latencies.append(time.perf_counter() - started)
                n += 1

        for record, span in ((False, warmup), (True, seconds)):
            server_before, client_before = cpu_seconds(server_pid), time.process_time()
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for conn in connections:
                    tg.start_soon(worker, conn, started + span, record)
            if record:
                sample.elapsed = time.perf_counter() - started
                sample.server_cpu = cpu_seconds(server_pid) - server_before
                sample.client_cpu = time.process_time() - client_before
    finally:
        for conn in connections:
            await conn.aclose()
    return sample


async def interleaved(variants: dict[str, Callable[[], Awaitable[Sample]]], rounds: int) -> dict[str, Sample]:
    """Run each variant once per round, alternating, and merge: a drift in machine speed hits all alike."""
    merged = {name: Sample() for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            merged[name] = merged[name].merge(await run())
    return merged


def run_client(main: Callable[[], Awaitable[Any]]) -> Any:
    """The client side always runs on asyncio + uvloop, the fastest loop here, whatever the server's backend."""
    return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


# -- the hub ---------------------------------------------------------------------------------------------


def rpc(server: HubServer, method: str, params: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """One JSON-RPC call over HTTP (set-up only: httpx is fine here)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    answer = httpx.post(server.url + "/rpc", json=body, headers=headers, timeout=30).json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


@dataclass(frozen=True)
class BenchAgent:
    agent_id: str
    handle: str
    api_key: str


def register(server: HubServer, handle: str) -> BenchAgent:
    """A new agent with a long-lived API key (access tokens expire in 15 minutes; a run may take longer)."""
    registered = rpc(server, "auth.register", {"handle": handle})
    key = rpc(server, "keys.create", {"name": "bench"}, token=registered["tokens"]["access_token"])
    return BenchAgent(registered["agent_id"], registered["handle"], key["api_key"])


# -- floor servers ---------------------------------------------------------------------------------------


@contextmanager
def floor_process(app: str, backend: str, canned: dict[str, Any] | None = None) -> Iterator[tuple[int, int]]:
    """A floor server (`app` = rest | mcp) on `backend` in a subprocess; yields (port, pid)."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump(canned or {}, out)
    command = [sys.executable, "-m", "bench.http_floors", "--app", app, "--backend", backend, "--port", str(port),
               "--canned", out.name]
    process = subprocess.Popen(command)
    try:
        _wait_for_port(port, process)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)
        os.unlink(out.name)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the floor server exited with {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the floor server did not start")


def rest_floor_app(canned: dict[str, Any]) -> Any:
    """Bare Starlette JSON routes on the hub's REST paths: read and parse the body, answer a canned
    document of the hub's own answer size. No auth, no validation, no store: the floor."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def messages(request: Request) -> JSONResponse:
        if request.method == "POST":
            json.loads(await request.body())
            return JSONResponse(canned.get("post", {}), status_code=201)
        return JSONResponse(canned.get("get", {}))

    return Starlette(routes=[Route("/api/conversations/{conversation_id}/messages", messages,
                                   methods=["GET", "POST"])])


def mcp_floor_app() -> Any:
    """A minimal MCP server with one `echo` tool, mounted as the hub mounts its own: the SDK's session
    manager (stateful sessions, SSE responses, the same DNS-rebinding settings) behind a Route."""
    from contextlib import asynccontextmanager

    from mcp.server.mcpserver import MCPServer
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from pydantic import BaseModel
    from starlette.applications import Starlette
    from starlette.routing import Route

    from mcp_tools.http import transport_security

    class Echoed(BaseModel):
        text: str

    server: MCPServer[Any] = MCPServer("echo", log_level="WARNING")

    @server.tool(structured_output=True)
    async def echo(text: str) -> Echoed:
        """Return the text."""
        return Echoed(text=text)

    manager = StreamableHTTPSessionManager(app=server._lowlevel_server, security_settings=transport_security(""),
                                           session_idle_timeout=30 * 60)

    class Endpoint:  # an ASGI object, not a function: Starlette then routes every method to it, as for the hub
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await manager.handle_request(scope, receive, send)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        async with manager.run():
            yield

    return Starlette(routes=[Route("/mcp", endpoint=Endpoint())], lifespan=lifespan)


def serve_floor(app_name: str, backend: str, port: int, canned: dict[str, Any]) -> None:
    import logging

    from bridges.runner import listening_socket, serve_app
    from bridges.ws_rpc import WebSocketSessions
    from hub.config import Settings

    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)  # as quiet as the hub's own serve
    app = rest_floor_app(canned) if app_name == "rest" else mcp_floor_app()
    app.state.websockets = WebSocketSessions()  # the runner closes them when it stops, as the hub's
    settings = Settings(data_dir=Path(tempfile.gettempdir()))
    with listening_socket("127.0.0.1", port) as listener:
        serve_app(app, settings, [listener], backend)


def main() -> None:
    parser = argparse.ArgumentParser(description="run one floor server (the benchmarks start it themselves)")
    parser.add_argument("--app", choices=["rest", "mcp"], required=True)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--canned", type=Path)
    args = parser.parse_args()
    canned = json.loads(args.canned.read_text()) if args.canned else {}
    serve_floor(args.app, args.backend, args.port, canned)


if __name__ == "__main__":
    main()
