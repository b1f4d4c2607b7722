"""Serving the app: uvicorn on asyncio, hypercorn in-process on trio. The one module that names
the event loops.

Both stop the same way: SIGTERM or SIGINT stops accepting connections, lets in-flight requests
finish for a few seconds, then the app's lifespan commits queued writes and closes the store. Open
WebSockets are closed by the hub with 1001 (going away), after answering what they have in flight.

Both ping every WebSocket peer every `ws_ping_seconds` and drop one that has not answered within
`ws_ping_timeout_seconds`: uvicorn does this itself; hypercorn only sends the pings, so
`_install_websocket_keepalive` adds the check.
"""

import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, Literal

import anyio
from starlette.applications import Starlette

from hub.config import Settings

from .app import create_app
from .ws_rpc import CLOSE_TIMEOUT, WebSocketSessions

log = logging.getLogger(__name__)

GRACEFUL_SECONDS: Final = 3.0
WEBSOCKET_DRAIN_SECONDS: Final = GRACEFUL_SECONDS - CLOSE_TIMEOUT
"""How long a WebSocket may go on answering its requests in flight after the stop signal; its close
frame then takes at most CLOSE_TIMEOUT, so it is closed within GRACEFUL_SECONDS."""
BACKLOG: Final = 2048
Backend = Literal["asyncio", "trio"]


async def _stop_on_signal(stop: Callable[[], None]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            stop()
            return


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts, so a port in use is one clear error.

    Raises:
        OSError: the address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def _serve_uvicorn(app: Starlette, settings: Settings, listener: socket.socket) -> None:
    import uvicorn

    websockets: WebSocketSessions = app.state.websockets

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # signals are handled by _stop_on_signal, the same way on both backends

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn would close open WebSockets with 1012 (service restart): the hub closes them
            # first, with 1001, having stopped accepting connections. HTTP requests run meanwhile,
            # and then have what is left of GRACEFUL_SECONDS.
            for server in self.servers:
                server.close()
            started = anyio.current_time()
            await websockets.go_away(WEBSOCKET_DRAIN_SECONDS)
            left = max(GRACEFUL_SECONDS - (anyio.current_time() - started), 0.1)
            self.config.timeout_graceful_shutdown = left  # type: ignore[assignment]  # used as a float
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        lifespan="on",
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ws_ping_seconds,
        ws_ping_timeout=settings.ws_ping_timeout_seconds,
        timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
        log_level="warning",
        # The client address is the socket's, as on hypercorn: trusting X-Forwarded-For from
        # loopback (uvicorn's default) would let any local client pick its rate-limit address.
        proxy_headers=False,
    )
    server = Server(config)

    def stop() -> None:
        server.should_exit = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, stop)
        await server.serve(sockets=[listener])
        tg.cancel_scope.cancel()


async def _serve_hypercorn(app: Starlette, settings: Settings, listener: socket.socket) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{os.dup(listener.fileno())}"]  # hypercorn closes the socket it is given
    config.graceful_timeout = GRACEFUL_SECONDS
    config.websocket_max_message_size = settings.max_frame_bytes
    config.websocket_ping_interval = settings.ws_ping_seconds
    config.accesslog = None
    _install_websocket_keepalive(settings.ws_ping_seconds, settings.ws_ping_timeout_seconds)
    websockets: WebSocketSessions = app.state.websockets
    stopping = anyio.Event()

    async def close_connections() -> None:
        await stopping.wait()
        give_up_at = anyio.current_time() + GRACEFUL_SECONDS + 1.0
        # hypercorn leaves open WebSockets alone until graceful_timeout, then drops their sockets.
        await websockets.go_away(WEBSOCKET_DRAIN_SECONDS)
        await anyio.sleep_until(give_up_at)
        if count := _shut_down_connections(port):
            log.warning("shut down %d connection(s) still open %gs after the stop signal", count, GRACEFUL_SECONDS + 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, stopping.set)
        tg.start_soon(close_connections)
        await serve(app, config, shutdown_trigger=stopping.wait)  # type: ignore[arg-type]
        tg.cancel_scope.cancel()


def _install_websocket_keepalive(interval: float, timeout: float) -> None:
    """Make hypercorn drop a WebSocket peer that stops answering its pings, as uvicorn does.

    hypercorn pings every `websocket_ping_interval` but never looks for the answer: a peer gone without
    closing (a frozen process, a lost network path) kept its connection, and whatever the hub held for
    it, until the kernel gave up on the socket. Here a peer must be heard from (its pong, or any frame)
    within `timeout` of each ping, or its socket is closed, which ends the app's session too. Only for
    HTTP/1.1 connections: closing the socket would end every stream of an HTTP/2 one.
    """
    from hypercorn.events import Closed
    from hypercorn.protocol import h11
    from hypercorn.protocol.events import Data, Event
    from hypercorn.protocol.ws_stream import WSStream
    from wsproto.events import Ping

    class KeepaliveWSStream(WSStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._heard = anyio.Event()
            """Set by anything from the peer after the last ping (or by the stream's end)."""
            self._ended = anyio.Event()
            # h11 gives each stream its connection's `stream_send`; that connection's own `send` takes
            # `Closed`, which closes the socket (and wakes a write stuck on it).
            self._close_socket = self.send.__self__.send  # type: ignore[attr-defined]

        async def handle(self, event: Event) -> None:
            if isinstance(event, Data):
                self._heard.set()
            await super().handle(event)
            if self.closed:
                self._heard.set()
                self._ended.set()

        async def _send_pings(self) -> None:
            # As uvicorn: a ping `interval` after the connection opens and after each ping before.
            next_ping = anyio.current_time() + interval
            while True:
                with anyio.CancelScope(deadline=next_ping):
                    await self._ended.wait()
                if self.closed:
                    return
                next_ping = anyio.current_time() + interval
                self._heard = anyio.Event()
                # Sent from a task of its own: a write may wait behind one to a peer that does not read.
                self.task_group.spawn(self._send_wsproto_event, Ping())
                with anyio.move_on_after(timeout):
                    await self._heard.wait()
                if self.closed:
                    return
                if not self._heard.is_set():
                    log.info("dropping WebSocket peer %s: no answer %gs after a ping", self.client, timeout)
                    await self._close_socket(Closed())
                    return

    h11.WSStream = KeepaliveWSStream  # type: ignore[misc]


def _shut_down_connections(port: int) -> int:
    """Shut down this process's accepted TCP connections on `port`; how many there were.

    hypercorn closes a connection's socket only after its app task ends, and writes to the socket in
    a shielded scope: an app task writing to a client that stopped reading never ends, and neither
    would the server after SIGTERM. A shut-down socket fails that write, so everything can finish.
    """
    count = 0
    for name in os.listdir("/dev/fd"):
        try:
            fd = os.dup(int(name))
        except (ValueError, OSError):
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            continue
        with sock:  # closes our duplicate only
            try:
                if (sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
                        and sock.getsockname()[1] == port and sock.getpeername()):
                    sock.shutdown(socket.SHUT_RDWR)
                    count += 1
            except OSError:  # not connected (a listener), or already gone
                pass
    return count


def serve(settings: Settings, *, host: str, port: int, backend: Backend) -> None:
    """Run the hub until SIGTERM or SIGINT.

    Raises:
        OSError: the address cannot be listened on (in use, not this machine's).
    """
    app = create_app(settings)
    with _listen(host, port) as listener:
        bound = listener.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        log.info("Parley listening on http://%s:%d (%s backend)", url_host, bound, backend)
        if backend == "trio":
            anyio.run(_serve_hypercorn, app, settings, listener, backend="trio")
        else:
            anyio.run(_serve_uvicorn, app, settings, listener, backend="asyncio",
                      backend_options={"use_uvloop": True})
