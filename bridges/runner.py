"""Serving the app: uvicorn on asyncio, hypercorn in-process on trio. The one module that names
the event loops.

Both stop the same way: SIGTERM or SIGINT stops accepting connections, lets in-flight requests
finish for a few seconds, then the app's lifespan commits queued writes and closes the store. Open
WebSockets are closed by the hub with 1001 (going away), after answering what they have in flight.

Both ping every WebSocket peer every `ws_ping_seconds` and drop one that has not answered within
`ws_ping_timeout_seconds`: uvicorn does this itself; hypercorn only sends the pings, so
`_install_websocket_keepalive` adds the check.

On uvicorn, WebSockets are served by `_lean_websocket_protocol`: uvicorn's own, holding less for each
idle connection (`bench.connections`).

`serve_workers` (`parley serve --workers N`) runs N such servers as worker processes on one port, on
PostgreSQL + Redis only: each worker is a node of the several-node design (`hub.cluster`). The parent
binds the port (a listening socket per worker, and a private Unix socket per worker that the others
forward MCP sessions' requests to), migrates and creates the server keys once, starts each worker
with its sockets, and supervises them: a stop signal is passed on to each and waited for (then they are
killed); a worker that exits unasked stops the others, and the parent fails.
"""

import heapq
import itertools
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, Final, Literal

import anyio
import anyio.abc
from starlette.applications import Starlette

from hub.config import ConfigError, Settings
from hub.secrets import ServerKeys
from mcp_tools.session_routing import Workers

from .app import create_app, migrate
from .ws_rpc import CLOSE_TIMEOUT, SEND_MANY, WebSocketSessions

log = logging.getLogger(__name__)

GRACEFUL_SECONDS: Final = 3.0
WEBSOCKET_DRAIN_SECONDS: Final = GRACEFUL_SECONDS - CLOSE_TIMEOUT
"""How long a WebSocket may go on answering its requests in flight after the stop signal; its close
frame then takes at most CLOSE_TIMEOUT, so it is closed within GRACEFUL_SECONDS."""
BACKLOG: Final = 2048
WORKERS_STOP_SECONDS: Final = 10.0
"""How long the parent of `--workers` waits for its workers to stop after passing them the stop signal
(each takes about GRACEFUL_SECONDS, and a second for the store), before it kills them."""
KILLED_WAIT_SECONDS: Final = 5.0
ORPHAN_CHECK_SECONDS: Final = 1.0
"""How often a worker checks that its parent is alive: a worker whose parent was killed stops."""
Backend = Literal["asyncio", "trio"]


async def _stop_on_signal(stop: Callable[[], None], parent: int | None = None) -> None:
    """Call `stop` on SIGTERM or SIGINT; for a worker of `serve_workers` (`parent`: the pid of the
    process that started it), also once that parent is gone."""
    async with anyio.create_task_group() as tg:
        if parent is not None:
            tg.start_soon(_stop_when_orphaned, stop, parent)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                stop()
                break
        tg.cancel_scope.cancel()


async def _stop_when_orphaned(stop: Callable[[], None], parent: int) -> None:
    while os.getppid() == parent:
        await anyio.sleep(ORPHAN_CHECK_SECONDS)
    log.warning("the parent process %d is gone; shutting down", parent)
    stop()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listening_socket(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """The listening socket, bound before the server starts, so a port in use is one clear error;
    with `reuse_port`, one of several on the port (SO_REUSEPORT); without `listen`, bound only.

    Raises:
        OSError: the address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def _serve_uvicorn(app: Starlette, settings: Settings, listeners: list[socket.socket],
                         parent: int | None = None) -> None:
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
        ws=_lean_websocket_protocol(),
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
        tg.start_soon(_stop_on_signal, stop, parent)
        await server.serve(sockets=listeners)
        tg.cancel_scope.cancel()


class _Inbox:
    """`asyncio.Queue`'s `put_nowait`, `get` and `empty` (unbounded), which is all uvicorn's WebSocket
    protocol uses of it: a queue only while messages wait, and a future only while a task waits."""

    __slots__ = ("_loop", "_items", "_getters")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._items: deque[Any] | None = None
        self._getters: list[Any] | None = None  # one getter at most, in practice: the app's receive

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._wake_first()

    async def get(self) -> Any:
        while not self._items:
            getter = self._loop.create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                # As asyncio.Queue: a getter cancelled after its wake-up passes the wake-up on.
                getter.cancel()
                if self._getters and getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_first()
                raise
            finally:
                if not self._getters:
                    self._getters = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def _wake_first(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


class _Flag:
    """`asyncio.Event`'s `is_set`, `set`, `clear` and `wait`, with a list of waiters only while there
    are any. Starts set, as uvicorn's "writable" does."""

    __slots__ = ("_loop", "_set", "_waiters")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._set = True
        self._waiters: list[Any] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        return True


def _lean_websocket_protocol() -> type:
    """uvicorn's WebSocket protocol (websockets, sans-I/O), holding less for each open connection.

    The same protocol, less what an idle connection held and never used again (tracemalloc, 2,000
    idle connections with an access token, about 8 KiB of 30):
    - the handshake's request and response, whose headers websockets parsed into a dict and a list
      each (about 4.5 KiB): the ASGI scope has its own copy of the request headers, and the
      response has been sent;
    - `asyncio.Queue` for the ASGI `receive` and `asyncio.Event` for "writable": four deques of about
      0.7 KiB each, even empty, replaced by `_Inbox` and `_Flag`.

    It also takes `SEND_MANY`: several text frames in one transport write.
    """
    from uvicorn.protocols.utils import ClientDisconnected
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.exceptions import InvalidState

    class LeanWebSocketsProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = _Inbox(self.loop)  # type: ignore[assignment]
            self.writable = _Flag(self.loop)  # type: ignore[assignment]

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            self.scope["extensions"][SEND_MANY] = {}
            # The request is not read again: the scope has its headers, and the response is made. Its
            # parsed headers are emptied too, because websockets' handshake parser keeps the request
            # in a local of its generator, which goes on to parse every frame of the connection.
            event.headers.clear()
            self.request = None

        async def send(self, message: Any) -> None:
            if message["type"] == SEND_MANY:
                await self._send_many(message["texts"])
                return
            await super().send(message)
            if self.handshake_complete:
                self.response = None  # read by the accept only

        async def _send_many(self, texts: list[str]) -> None:
            """Several text frames in one write to the transport: `websocket.send`'s checks, once."""
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            if self.close_sent or not self.handshake_complete:
                raise RuntimeError(f"{SEND_MANY} before the accept or after the close")
            try:
                for text in texts:
                    self.conn.send_text(text.encode())
            except InvalidState:
                raise ClientDisconnected() from None
            self.transport.write(b"".join(self.conn.data_to_send()))

    return LeanWebSocketsProtocol


async def _serve_hypercorn(app: Starlette, settings: Settings, listeners: list[socket.socket],
                           parent: int | None = None) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    port = listeners[0].getsockname()[1]
    config = Config()
    config.bind = [f"fd://{os.dup(listener.fileno())}" for listener in listeners]  # hypercorn closes what it is given
    config.graceful_timeout = GRACEFUL_SECONDS
    config.websocket_max_message_size = settings.max_frame_bytes
    config.websocket_ping_interval = settings.ws_ping_seconds
    config.accesslog = None
    pings = _install_websocket_keepalive(settings.ws_ping_seconds, settings.ws_ping_timeout_seconds)
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
        tg.start_soon(_stop_on_signal, stopping.set, parent)
        tg.start_soon(close_connections)
        tg.start_soon(pings.run)
        await serve(app, config, shutdown_trigger=stopping.wait)  # type: ignore[arg-type]
        tg.cancel_scope.cancel()


class _PingSchedule:
    """When each hypercorn WebSocket is next due a ping or the check of its answer: one task and a heap
    for all of them, rather than a task, a cancel scope and two events on each connection (about
    3 KiB of an idle connection on trio, tracemalloc)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, weakref.ref[Any]]] = []  # (when, tie-break, stream)
        self._order = itertools.count()
        self._sleep: anyio.CancelScope | None = None

    def add(self, when: float, stream: Any) -> None:
        # A weak reference: a stream whose connection has ended is not kept until its due time.
        heapq.heappush(self._due, (when, next(self._order), weakref.ref(stream)))
        if self._sleep is not None and when < self._sleep.deadline:
            self._sleep.deadline = when

    async def run(self) -> None:
        while True:
            now = anyio.current_time()
            while self._due and self._due[0][0] <= now:
                stream = heapq.heappop(self._due)[2]()
                if stream is not None:
                    stream.keepalive_due(now)
            with anyio.CancelScope(deadline=self._due[0][0] if self._due else math.inf) as self._sleep:
                await anyio.sleep_forever()


def _install_websocket_keepalive(interval: float, timeout: float) -> _PingSchedule:
    """Make hypercorn drop a WebSocket peer that stops answering its pings, as uvicorn does; the
    schedule returned must run for the pings and checks to happen.

    hypercorn pings every `websocket_ping_interval` but never looks for the answer: a peer gone without
    closing (a frozen process, a lost network path) kept its connection, and whatever the hub held for
    it, until the kernel gave up on the socket. Here a peer must be heard from (its pong, or any frame)
    within `timeout` of each ping, or its socket is closed, which ends the app's session too. Only for
    HTTP/1.1 connections: closing the socket would end every stream of an HTTP/2 one.

    The same WebSocket stream takes `SEND_MANY` (several frames, one socket write), as
    `_lean_websocket_protocol` does on uvicorn.
    """
    from hypercorn.events import Closed
    from hypercorn.protocol import h11
    from hypercorn.protocol.events import Data, Event, Request
    from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
    from wsproto.events import Ping, TextMessage
    from wsproto.utilities import LocalProtocolError

    schedule = _PingSchedule()

    class KeepaliveWSStream(WSStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._heard = False
            """Anything heard from the peer since the last ping."""
            self._next_ping = math.inf
            """When the next ping is due, while the answer to the last one is awaited; else inf."""
            # h11 gives each stream its connection's `stream_send`; that connection's own `send` takes
            # `Closed`, which closes the socket (and wakes a write stuck on it).
            self._close_socket = self.send.__self__.send  # type: ignore[attr-defined]

        async def handle(self, event: Event) -> None:
            if isinstance(event, Data):
                self._heard = True
            await super().handle(event)
            if isinstance(event, Request):
                self.scope["extensions"][SEND_MANY] = {}

        async def app_send(self, message: Any) -> None:
            if message is None or message["type"] != SEND_MANY:
                await super().app_send(message)
            elif not self.closed and self.state == ASGIWebsocketState.CONNECTED:
                # Several frames, one write to the socket: `websocket.send`'s checks, once.
                try:
                    data = b"".join(self.connection.send(TextMessage(data=text)) for text in message["texts"])
                except LocalProtocolError:  # closing: as hypercorn drops a frame sent then
                    return
                await self.send(Data(stream_id=self.stream_id, data=data))

        async def _send_pings(self) -> None:
            # Called once the connection is accepted. As uvicorn: a ping `interval` after the
            # connection opens and after each ping before.
            schedule.add(anyio.current_time() + interval, self)

        def keepalive_due(self, now: float) -> None:
            """The next ping is due, or the check of the answer to the last one. A closed stream
            leaves the schedule here, at its next due time."""
            if self.closed:
                return
            if self._next_ping == math.inf:  # a ping is due
                self._heard = False
                self._next_ping = now + interval
                # Sent from a task of its own: a write may wait behind one to a peer that does not read.
                if self._spawn(self._send_wsproto_event, Ping()):
                    schedule.add(now + timeout, self)
            elif self._heard:
                schedule.add(self._next_ping, self)
                self._next_ping = math.inf
            else:
                log.info("dropping WebSocket peer %s: no answer %gs after a ping", self.client, timeout)
                self._spawn(self._close_socket, Closed())

        def _spawn(self, func: Any, *args: Any) -> bool:
            """Start `func` in the connection's task group; False if that has ended (a connection that
            failed on an OSError ends its task group without closing its stream)."""
            try:
                self.task_group.spawn(func, *args)
            except RuntimeError:  # the nursery is closed to new tasks
                return False
            return True

    h11.WSStream = KeepaliveWSStream  # type: ignore[misc]
    return schedule


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


def serve(settings: Settings, *, host: str, port: int, backend: Backend, listen_fd: int | None = None,
          peer_fd: int | None = None, parent: int | None = None) -> None:
    """Run the hub until SIGTERM or SIGINT; as a worker of `serve_workers` on its socket `listen_fd` (and
    on `peer_fd`, its socket for the other workers), also until its parent (that process's pid) is gone.

    Raises:
        OSError: the address cannot be listened on (in use, not this machine's).
    """
    workers = None
    if listen_fd is None:
        listeners = [listening_socket(host, port)]
        log.info("Parley listening on %s (%s backend)", _url(host, listeners[0].getsockname()[1]), backend)
    else:  # a worker: its parent said where it listens
        listeners = [socket.socket(fileno=listen_fd)]
        if peer_fd is not None:
            listeners.append(peer := socket.socket(fileno=peer_fd))
            workers = Workers.of_socket(peer.getsockname())
        for listener in listeners:
            listener.setblocking(False)
    app = create_app(settings, workers=workers)
    with ExitStack() as open_listeners:
        for listener in listeners:
            open_listeners.enter_context(listener)
        serve_app(app, settings, listeners, backend, parent=parent)


def serve_app(app: Starlette, settings: Settings, listeners: list[socket.socket], backend: Backend, *,
              parent: int | None = None) -> None:
    """Serve `app` on `listeners` until SIGTERM or SIGINT (or until `parent` is gone): uvicorn on asyncio,
    hypercorn on trio, as the hub is served. The benchmarks' floor apps are served through here too, so
    a floor pays what the hub's server costs and nothing else. The caller owns the sockets; `app.state`
    needs `websockets` (a `WebSocketSessions`), which are told to go away when the server stops.
    """
    if backend == "trio":
        anyio.run(_serve_hypercorn, app, settings, listeners, parent, backend="trio")
    else:
        anyio.run(_serve_uvicorn, app, settings, listeners, parent, backend="asyncio",
                  backend_options={"use_uvloop": True})


class WorkerFailed(Exception):
    """A worker of `serve_workers` exited unasked, or did not stop in time when asked."""


def workers_refusal(settings: Settings, workers: int) -> str | None:
    """Why this hub cannot be served by `workers` processes, or None when it can."""
    if workers <= 1:
        return None
    if settings.store_url().startswith("sqlite"):
        return (f"--workers {workers} needs PostgreSQL and Redis: the embedded SQLite store has one writer, so it "
                "is served by one process; set PARLEY_DATABASE_URL to a PostgreSQL database and PARLEY_REDIS_URL")
    if not settings.redis_url:
        return (f"--workers {workers} needs PARLEY_REDIS_URL: each worker is a node of its own, and live events "
                "reach the subscribers of the other workers through Redis only")
    return None


def serve_workers(settings: Settings, *, host: str, port: int, workers: int, worker_command: Sequence[str]) -> None:
    """Serve the hub with `workers` processes on one port, until SIGTERM or SIGINT.

    Each worker serves on a listening socket of its own, bound here with SO_REUSEPORT, so the kernel
    spreads new connections evenly over the workers. (One socket shared by all of them gave each new
    connection to whichever worker woke first: 16 WebSockets of a benchmark all went to one of two.)
    A plain bind first checks that the port is free, not held by another group of SO_REUSEPORT sockets
    (another `--workers` hub), and picks the port for `--port 0`.

    `worker_command` starts one worker (`parley serve ...`, to which `--listen-fd` and `--parent` are
    added): a node as `parley serve` alone would be, with the same settings and environment.
    Migrations and the server keys are done here, once, before any worker starts.

    Raises:
        ConfigError: the store is SQLite, or no Redis is configured (`workers_refusal`).
        OSError: the address cannot be listened on.
        WorkerFailed: a worker exited unasked (the others were stopped), or had to be killed.
    """
    if (refusal := workers_refusal(settings, workers)) is not None:
        raise ConfigError(refusal)
    with listening_socket(host, port, listen=False) as probe:
        port = probe.getsockname()[1]
    listeners = [listening_socket(host, port, reuse_port=True) for _ in range(workers)]
    # Each worker's socket for the others (MCP sessions are served where they live: session_routing).
    peers_directory = Path(tempfile.mkdtemp(prefix="parley-workers-"))  # only this user may open it
    peers: list[socket.socket] = []
    try:
        for number in range(1, workers + 1):
            peers.append(_listen_unix(peers_directory / Workers.socket_name(number)))
        migrate(settings)
        ServerKeys.load_or_create(settings.secrets_path())  # workers racing to create the file would fail
        log.info("Parley listening on %s (%d workers)", _url(host, port), workers)
        anyio.run(_supervise, list(worker_command), listeners, peers)
    finally:
        for listener in [*listeners, *peers]:
            listener.close()
        shutil.rmtree(peers_directory, ignore_errors=True)


def _listen_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def _supervise(worker_command: list[str], listeners: list[socket.socket], peers: list[socket.socket]) -> None:
    """Start a worker on each listener, with its socket for the other workers (both then closed here: a
    worker that ends takes its socket out of the port's group), then wait for a stop signal (passed on
    to each worker) or for a worker to exit unasked (the others are sent SIGTERM); then wait for them
    all, killing any still running after WORKERS_STOP_SECONDS.

    Raises:
        WorkerFailed: a worker exited unasked, or had to be killed.
    """
    processes: list[anyio.abc.Process] = []
    stop = anyio.Event()
    stop_signal = signal.SIGTERM
    failure: str | None = None

    async def on_signal() -> None:
        nonlocal stop_signal
        # Held until the end: a second Ctrl-C while the workers stop must not interrupt the parent.
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not stop.is_set():
                    log.info("received %s; stopping %d workers", signal.Signals(signum).name, len(processes))
                    stop_signal = signal.Signals(signum)
                    stop.set()

    async def watch(number: int, process: anyio.abc.Process) -> None:
        nonlocal failure
        code = await process.wait()
        if not stop.is_set():
            failure = f"worker {number} (pid {process.pid}) exited with {code}; the other workers were stopped"
            log.error("%s", failure)
            stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_signal)
        try:
            for number, (listener, peer) in enumerate(zip(listeners, peers, strict=True), start=1):
                command = [*worker_command, "--listen-fd", str(listener.fileno()), "--peer-fd", str(peer.fileno()),
                           "--parent", str(os.getpid())]
                # A session of its own: Ctrl-C in a terminal reaches the parent only, which passes it on once.
                process = await anyio.open_process(command, stdin=subprocess.DEVNULL, stdout=None, stderr=None,
                                                   pass_fds=(listener.fileno(), peer.fileno()), start_new_session=True)
                listener.close()
                peer.close()
                processes.append(process)
                log.info("started worker %d (pid %d)", number, process.pid)
                tg.start_soon(watch, number, process)
            await stop.wait()
        finally:
            with anyio.CancelScope(shield=True):
                stuck = await _stop_workers(processes, stop_signal)
            tg.cancel_scope.cancel()
    if failure is None and stuck:
        failure = f"{stuck} worker(s) did not stop within {WORKERS_STOP_SECONDS:g}s and were killed"
    if failure is None and (codes := [process.returncode for process in processes if process.returncode]):
        failure = f"worker(s) exited with {', '.join(map(str, codes))} when stopping"
    if failure is not None:
        raise WorkerFailed(failure)


async def _stop_workers(processes: list[anyio.abc.Process], signum: signal.Signals) -> int:
    """Send `signum` to the running workers and wait for them; how many had to be killed."""
    for process in processes:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.send_signal(signum)
    with anyio.move_on_after(WORKERS_STOP_SECONDS):
        for process in processes:
            await process.wait()
    stuck = [process for process in processes if process.returncode is None]
    for process in stuck:
        log.error("worker pid %d did not stop within %gs; killing it", process.pid, WORKERS_STOP_SECONDS)
        with suppress(ProcessLookupError):
            process.kill()
    with anyio.move_on_after(KILLED_WAIT_SECONDS):
        for process in stuck:
            await process.wait()
    return len(stuck)
