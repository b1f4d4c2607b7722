"""Serving the app: uvicorn on asyncio, hypercorn in-process on trio. The one module that names
the event loops.

Both stop the same way: SIGTERM or SIGINT stops accepting connections, lets in-flight requests
finish for a few seconds, then the app's lifespan commits queued writes and closes the store.
"""

import logging
import os
import signal
import socket
from collections.abc import Callable
from contextlib import contextmanager
from typing import Final, Iterator, Literal

import anyio
from starlette.applications import Starlette

from hub.config import Settings

from .app import create_app

log = logging.getLogger(__name__)

GRACEFUL_SECONDS: Final = 3.0
Backend = Literal["asyncio", "trio"]


async def _stop_on_signal(stop: Callable[[], None]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            stop()
            return


async def _serve_uvicorn(app: Starlette, settings: Settings, host: str, port: int) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # signals are handled by _stop_on_signal, the same way on both backends

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        ws_max_size=settings.max_frame_bytes,
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
        await server.serve()
        tg.cancel_scope.cancel()


async def _serve_hypercorn(app: Starlette, settings: Settings, host: str, port: int) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = GRACEFUL_SECONDS
    config.websocket_max_message_size = settings.max_frame_bytes
    config.accesslog = None
    stopping = anyio.Event()

    async def shut_down_stuck_connections() -> None:
        await stopping.wait()
        await anyio.sleep(GRACEFUL_SECONDS + 1.0)
        if count := _shut_down_connections(port):
            log.warning("shut down %d connection(s) still open %gs after the stop signal", count, GRACEFUL_SECONDS + 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, stopping.set)
        tg.start_soon(shut_down_stuck_connections)
        await serve(app, config, shutdown_trigger=stopping.wait)  # type: ignore[arg-type]
        tg.cancel_scope.cancel()


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
    """Run the hub until SIGTERM or SIGINT."""
    app = create_app(settings)
    log.warning("Parley listening on http://%s:%d (%s backend, store %s)", host, port, backend,
                settings.store_url().split("@")[-1])
    if backend == "trio":
        anyio.run(_serve_hypercorn, app, settings, host, port, backend="trio")
    else:
        anyio.run(_serve_uvicorn, app, settings, host, port, backend="asyncio", backend_options={"use_uvloop": True})
