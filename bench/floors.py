"""Floor servers: the thinnest WebSocket servers the hub's own stack can run, as subprocesses.

A Starlette app served exactly as the hub is served (`bridges.runner`'s uvicorn-on-uvloop and
hypercorn-on-trio functions with the hub's default settings), so a ratio to it isolates what the
hub adds on top of its server stack:

- `/echo`: sends every text frame back (the send and connections floors);
- `/fanout/recv` and `/fanout/send`: every frame from a sender goes to every receiver (through a
  bounded queue and a writer task per receiver, as the hub's subscribers have) and back to the
  sender as its acknowledgement (the fan-out floor);
- `/health`: ready.

    .venv/bin/python -m bench.floors --backend asyncio|trio --port 8765   # serve until SIGTERM

`FloorServer(backend).start()` / `.stop()` run it from a benchmark.
"""

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Final

import anyio
import httpx
from anyio.streams.memory import MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridges.runner import listening_socket, serve_app
from bridges.ws_rpc import WebSocketSessions
from hub.config import Settings
from tests.servers import free_port

RECEIVER_QUEUE: Final = 1024
"""Frames a fan-out receiver may fall behind by (the hub's default `event_buffer`)."""
START_TIMEOUT: Final = 20.0


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


class Broadcast:
    """The receivers of `/fanout`: one bounded queue each, drained by the receiver's own task."""

    def __init__(self) -> None:
        self.receivers: set[MemoryObjectSendStream[str]] = set()

    async def receive(self, websocket: WebSocket) -> None:
        await websocket.accept()
        send, receive = anyio.create_memory_object_stream[str](max_buffer_size=RECEIVER_QUEUE)
        self.receivers.add(send)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain_disconnect, websocket, tg.cancel_scope)
                async with receive:
                    async for text in receive:
                        await websocket.send_text(text)
        finally:
            self.receivers.discard(send)

    @staticmethod
    async def _drain_disconnect(websocket: WebSocket, scope: anyio.CancelScope) -> None:
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            scope.cancel()

    async def send(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                for receiver in list(self.receivers):
                    receiver.send_nowait(text)  # WouldBlock = a receiver lagging: fails loudly, as it should not
                await websocket.send_text(text)
        except WebSocketDisconnect:
            pass


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_floor_app() -> Starlette:
    broadcast = Broadcast()
    return Starlette(routes=[
        Route("/health", health),
        WebSocketRoute("/echo", echo),
        WebSocketRoute("/fanout/recv", broadcast.receive),
        WebSocketRoute("/fanout/send", broadcast.send),
    ])


def serve(backend: str, port: int) -> None:
    """Serve the floor app until SIGTERM, the way `bridges.runner.serve` serves the hub."""
    app, settings = create_floor_app(), Settings()
    app.state.websockets = WebSocketSessions()  # the runner closes them when it stops, as the hub's
    with listening_socket("127.0.0.1", port) as listener:
        serve_app(app, settings, [listener], backend)


@dataclass
class FloorServer:
    """The floor app in its own process (so its CPU and memory are measured apart from the client's)."""

    backend: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> "FloorServer":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.floors", "--backend", self.backend, "--port", str(self.port)]
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.backend} floor server exited at start-up")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"the {self.backend} floor server did not start within {START_TIMEOUT}s")

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "FloorServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(args.backend, args.port)


if __name__ == "__main__":
    main()
