"""JSON-RPC 2.0 over a WebSocket at /ws: the transport for autonomous agents.

A connection authenticates with `Authorization: Bearer` at the upgrade (a refused credential gets
HTTP 401 and no connection) or with an `auth.authenticate` call within a few seconds of connecting.
The credential is checked again on every call and every batch of pushed events, so a revoked key or
a suspended agent stops working at once on open connections too; that check is a comparison unless
some credential changed since the last one (`Hub.still_valid`).

One task reads frames, each request runs in its own task (at most `ws_max_in_flight` at once, so a
client that floods requests is simply read more slowly), and a writer task runs while frames wait to
go out. Outbound frames wait in a bounded queue: a client that does not read its responses is
disconnected with 1013 rather than holding memory or slowing anyone else. A frame over the size
limit closes the connection with 1009. The reading task also keeps the connection's timers (the
heartbeat every `ws_heartbeat_seconds`, the authentication deadline) while it waits for a frame, so
an idle connection is one task: at ten thousand connections, tasks are most of the memory.

`events.subscribe` {after} starts the caller's event stream (`hub.services.events.EventStream`:
replay after the cursor, then live): events go out as `event` notifications from a task of their
own, as many as are ready per wake-up. A subscriber that falls further behind than the bus buffers
is closed with 1013 and a reason naming the cursor to resume after.

When the server stops (SIGTERM), `WebSocketSessions.go_away` closes every connection with 1001 (going
away): each stops reading, answers the requests it has in flight (for a moment), then closes.
"""

import logging
import math
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus
from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from hub.bus import SubscriberLagged
from hub.core import Hub
from hub.metrics import Metrics
from hub.principal import Principal
from hub.services.events import EventStream
from hub.services.identity import Verified
from hub.validation import invalid_params
from protocol import websocket as ws_protocol
from protocol.errors import Conflict, HubError
from protocol.events import EVENT_NOTIFICATION, SUBSCRIBE_METHOD, Event, SubscribeResult
from protocol.identity import AuthenticateParams, AuthenticateResult

from .credentials import address_of, credential_from
from .jsonrpc import Framing, Request, encode_notification

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0
GOING_AWAY_REASON: Final = "the hub is shutting down; reconnect and resume"
CONNECTIONS_METRIC: Final = "parley_ws_connections"
"""Open WebSocket connections (a /metrics gauge)."""
SLOW_CONSUMER_METRIC = "parley_ws_slow_consumer_disconnects"
"""How many connections were closed with 1013 because their client did not read (a /metrics gauge)."""
EVENT_BATCH: Final = 64
"""Events written per wake-up of a stream, under one credential check and one turn at sending."""
SEND_MANY: Final = "parley.websocket.send_many"
"""An ASGI extension of the hub's own servers (`bridges/runner.py`): a message of this type carries
several text frames (`texts`), written to the socket in one write rather than one write each. Under
a server without it in the scope's extensions, frames go one `websocket.send` at a time."""


class EventFrames:
    """The `event` notification of each live event, encoded once for all the connections it goes to.

    The bus hands the same `Event` object to every subscription it is delivered to, so a message to
    a 100-member group is dumped and serialized once instead of 100 times. Keyed by the object, which
    is held while cached so its id cannot be reused; a replayed event is a fresh object and is just
    encoded again. Only touched from the event loop, so it needs no lock.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._frames: OrderedDict[int, tuple[Event, str]] = OrderedDict()

    def frame(self, event: Event) -> str:
        cached = self._frames.get(id(event))
        if cached is not None and cached[0] is event:
            return cached[1]
        text = encode_notification(EVENT_NOTIFICATION, event)
        self._frames[id(event)] = (event, text)
        if len(self._frames) > self._size:
            self._frames.popitem(last=False)
        return text


_event_frames = EventFrames(size=1024)
"""Process-wide: safe across hubs in one process, since entries are matched by object identity."""


class WebSocketSessions:
    """The open connections of one app, so that a stopping server closes them with 1001 itself (uvicorn
    would send 1012, hypercorn would drop the socket)."""

    def __init__(self) -> None:
        self._open: set[WebSocketSession] = set()
        self._going_away = False
        self._all_closed: anyio.Event | None = None
        self.slow_consumer_disconnects = 0
        """Connections closed with 1013 because their client did not read."""

    def __len__(self) -> int:
        return len(self._open)

    def count_in(self, metrics: Metrics) -> None:
        """Show the open connections and the slow consumers dropped in `metrics` (read when rendered)."""
        metrics.sample(CONNECTIONS_METRIC, "gauge", lambda: len(self))
        metrics.sample(SLOW_CONSUMER_METRIC, "gauge", lambda: self.slow_consumer_disconnects)

    def add(self, session: "WebSocketSession") -> bool:
        """Count `session` as open; False once going away (the session then closes at once)."""
        if self._going_away:
            return False
        self._open.add(session)
        return True

    def discard(self, session: "WebSocketSession") -> None:
        self._open.discard(session)
        if not self._open and self._all_closed is not None:
            self._all_closed.set()

    async def go_away(self, drain_seconds: float) -> None:
        """Close every connection with 1001 after answering its requests in flight (for at most
        `drain_seconds`), and any that opens meanwhile at once. Returns when all are closed, or after
        `drain_seconds` + CLOSE_TIMEOUT (a close frame stuck behind a peer that does not read)."""
        self._going_away = True
        deadline = anyio.current_time() + drain_seconds
        for session in list(self._open):
            session.go_away(deadline)
        with anyio.move_on_after(drain_seconds + CLOSE_TIMEOUT):
            if self._open:
                self._all_closed = anyio.Event()
                await self._all_closed.wait()


class WebSocketSession:
    """One connection. Owns its tasks; all of them end when the connection does."""

    # Slots, not a __dict__: one of these per open connection.
    __slots__ = ("_ws", "_send", "_hub", "_framing", "_sessions", "_settings", "_address", "_credential",
                 "_verified", "_close_with", "_outbound", "_next_heartbeat", "_auth_deadline", "_in_flight",
                 "_slot_freed", "_reading", "_drain_until", "_quiet", "_tasks", "_sender_busy", "_sender_free",
                 "_streaming")

    def __init__(self, websocket: WebSocket, send: Send, hub: Hub, framing: Framing,
                 sessions: WebSocketSessions) -> None:
        self._ws = websocket
        self._send = send
        """The server's ASGI `send`, for `SEND_MANY` (Starlette's `WebSocket.send` refuses other types)."""
        self._hub = hub
        self._framing = framing
        self._sessions = sessions
        self._settings = hub.settings
        self._address = address_of(websocket.client)
        self._credential: str | None = None
        self._verified: Verified | None = None
        self._close_with: tuple[int, str] | None = None
        self._outbound: deque[str] | None = None
        """Frames waiting for the writer task; None when no writer runs."""
        self._next_heartbeat = math.inf
        self._auth_deadline = math.inf
        self._in_flight = 0
        self._slot_freed: anyio.Event | None = None
        """Set when a request ends while the reading task waits for room (at `ws_max_in_flight`)."""
        self._reading = anyio.CancelScope()
        self._drain_until: float | None = None
        """Going away: until when requests in flight may still be answered."""
        self._quiet: anyio.Event | None = None
        """Set when a request ends or the writer finishes while `run` waits for both (going away)."""
        self._tasks: TaskGroup | None = None
        # Events are written by their own task, not through the outbound queue: a slow reader then
        # holds back the event stream (whose bus buffer overflows and ends it with a resume cursor)
        # without filling the queue that responses and heartbeats use.
        self._sender_busy = False
        self._sender_free: anyio.Event | None = None
        """Set when a writer is done while the other waits for its turn (see `_sending`)."""
        self._streaming = False

    async def run(self) -> None:
        try:
            credential = credential_from(self._ws.headers)
            if credential is not None:
                self._verified = await self._hub.verify(credential, self._address)
        except HubError as error:
            await self._refuse(error)
            return
        self._credential = credential
        await self._ws.accept()
        if not self._sessions.add(self):
            self._close_with = (ws_protocol.GOING_AWAY, GOING_AWAY_REASON)
            await self._send_close()
            return
        try:
            await self._serve()
            await self._send_close()
        finally:
            self._sessions.discard(self)

    async def _serve(self) -> None:
        now = anyio.current_time()
        self._next_heartbeat = now + self._settings.ws_heartbeat_seconds
        if self._credential is None:
            self._auth_deadline = now + self._settings.ws_auth_timeout_seconds
        async with anyio.create_task_group() as tg:
            self._tasks = tg
            with self._reading:
                await self._read_loop(tg)
            if self._drain_until is not None:
                with anyio.CancelScope(deadline=self._drain_until):
                    await self._answered()
            tg.cancel_scope.cancel()

    async def _send_close(self) -> None:
        if self._close_with is not None:
            code, reason = self._close_with
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                try:
                    await self._ws.close(code, reason)
                except (RuntimeError, OSError):  # the peer went away first
                    pass

    def go_away(self, drain_until: float) -> None:
        """Stop reading; close with 1001 once the requests in flight are answered, or at `drain_until`."""
        if self._close_with is None:
            self._close_with = (ws_protocol.GOING_AWAY, GOING_AWAY_REASON)
        self._drain_until = drain_until
        self._reading.cancel()

    async def _answered(self) -> None:
        """Until no request is in flight and no answer waits to be written."""
        while self._in_flight or self._outbound is not None:
            self._quiet = anyio.Event()
            await self._quiet.wait()

    async def _refuse(self, error: HubError) -> None:
        if "websocket.http.response" in self._ws.scope.get("extensions", {}):
            body = {"error": error.to_dict()}
            await self._ws.send_denial_response(JSONResponse(body, status_code=error.http_status))
        else:
            await self._ws.close(ws_protocol.UNAUTHORIZED, error.message[:120])

    def _close(self, code: int, reason: str) -> None:
        """Close the connection: stop every task, then send the close frame (from `run`)."""
        if self._close_with is None:
            self._close_with = (code, reason)
            if code == ws_protocol.TRY_AGAIN_LATER:
                self._sessions.slow_consumer_disconnects += 1
        assert self._tasks is not None
        self._tasks.cancel_scope.cancel()

    async def _read_loop(self, tg: TaskGroup) -> None:
        """Start a task for each frame the client sends, until it goes, keeping the timers meanwhile.

        One cancel scope per timer period, not one per frame: entering a scope with a deadline costs
        5-7 µs, against about 80 µs of the loop's time for a whole send. A frame received but not yet
        started is kept across a timer's cancel."""
        frame: str | bytes | None = None
        while True:
            with anyio.CancelScope(deadline=min(self._next_heartbeat, self._auth_deadline)):
                while frame is not None or (frame := await self._receive()) is not None:
                    await self._take_slot()
                    tg.start_soon(self._handle, frame)
                    frame = None
                return
            self._on_timer()

    async def _receive(self) -> str | bytes | None:
        """The client's next frame; None once it has gone, or once a frame over the limit closed the
        connection (counted in bytes: a server's own limit may count the characters of a text frame)."""
        try:
            message = await self._ws.receive()
        except WebSocketDisconnect:
            return None
        if message["type"] == "websocket.disconnect":
            return None
        frame: str | bytes = message.get("text") or message.get("bytes") or b""
        limit = self._settings.max_frame_bytes
        if len(frame.encode() if isinstance(frame, str) else frame) > limit:
            self._close(ws_protocol.MESSAGE_TOO_BIG, f"frames are limited to {limit} bytes")
            return None
        return frame

    def _on_timer(self) -> None:
        now = anyio.current_time()
        if now >= self._auth_deadline:
            self._auth_deadline = math.inf
            if self._credential is None:
                self._close(ws_protocol.UNAUTHORIZED,
                            f"authenticate within {self._settings.ws_auth_timeout_seconds:g}s")
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._settings.ws_heartbeat_seconds
            self._enqueue(encode_notification(ws_protocol.HEARTBEAT_METHOD,
                                              {"time": self._hub.clock.now().isoformat()}))

    async def _handle(self, payload: str | bytes) -> None:
        try:
            response = await self._framing.respond(payload, self._execute)
            if response is not None:
                self._enqueue(response)
        finally:
            self._release_slot()

    async def _take_slot(self) -> None:
        """Wait for room among the requests in flight. A counter, not a semaphore: the reading task
        is the only waiter, and an idle connection then holds no wait queue."""
        while self._in_flight >= self._settings.ws_max_in_flight:
            self._slot_freed = anyio.Event()
            await self._slot_freed.wait()
        self._in_flight += 1

    def _release_slot(self) -> None:
        self._in_flight -= 1
        if self._slot_freed is not None:
            self._slot_freed.set()
            self._slot_freed = None
        self._settle()

    def _settle(self) -> None:
        if self._quiet is not None:
            self._quiet.set()
            self._quiet = None

    def _enqueue(self, frame: str) -> None:
        """Queue a frame for the writer task, starting one (with a fresh queue) if none runs."""
        if self._outbound is None:
            self._outbound = deque()
            assert self._tasks is not None
            self._tasks.start_soon(self._write_queued, self._outbound)
        elif len(self._outbound) >= self._settings.ws_outbound_queue:
            self._close(ws_protocol.TRY_AGAIN_LATER, "outbound queue full: the client is not reading; reconnect")
            return
        self._outbound.append(frame)

    @asynccontextmanager
    async def _sending(self) -> AsyncIterator[None]:
        """One writer at a time: the response writer or the event pump. A flag, and an event only
        while one waits, rather than an anyio.Lock, which holds a wait queue even when free: on every
        idle connection, of which there may be ten thousand."""
        while self._sender_busy:
            if self._sender_free is None:
                self._sender_free = anyio.Event()
            await self._sender_free.wait()
        self._sender_busy = True
        try:
            yield
        finally:
            self._sender_busy = False
            if self._sender_free is not None:
                self._sender_free.set()
                self._sender_free = None

    async def _write_queued(self, queue: deque[str]) -> None:
        """Write the queued frames, then end and drop the queue: an idle connection holds neither."""
        try:
            while queue:
                # All that is queued by now: a group commit answers many requests at once.
                texts = list(queue)
                queue.clear()
                async with self._sending():
                    await self._write(texts)
        finally:
            self._outbound = None
            self._settle()

    async def _write(self, texts: list[str]) -> None:
        """Write `texts` as frames, in order; the caller has its turn at sending (`_sending`).

        The extension is looked up here, not when the session starts: hypercorn may start the app
        before its stream has added it to the scope."""
        if SEND_MANY not in (self._ws.scope.get("extensions") or {}):
            for text in texts:
                await self._ws.send_text(text)
            return
        try:
            await self._send({"type": SEND_MANY, "texts": texts})
        except OSError:  # as Starlette's `send_text`: the peer is gone
            raise WebSocketDisconnect(code=1006) from None

    async def _caller(self) -> Principal:
        """The caller, authenticated again only when a credential may have changed or expired since."""
        credential = self._credential
        if credential is None:
            return Principal.anonymous(self._address)
        if self._verified is not None and self._hub.still_valid(self._verified):
            return self._verified.principal
        verified = await self._hub.verify(credential, self._address)
        if credential == self._credential:  # not replaced by `auth.authenticate` meanwhile
            self._verified = verified
        return verified.principal

    async def _execute(self, request: Request) -> Any:
        if request.method == ws_protocol.AUTHENTICATE_METHOD:
            return await self._authenticate(request.params)
        if request.method == SUBSCRIBE_METHOD:
            return await self._subscribe(request.params)
        return await self._hub.dispatch_model(await self._caller(), request.method, request.params)

    async def _authenticate(self, params: Any) -> dict[str, Any]:
        try:
            token = AuthenticateParams.model_validate(params).token
        except ValidationError as error:
            raise invalid_params(error, "params for auth.authenticate") from None
        verified = await self._hub.verify(token, self._address)
        principal = verified.principal
        assert principal.agent_id is not None and principal.handle is not None
        self._credential, self._verified = token, verified
        return AuthenticateResult(
            agent_id=principal.agent_id, handle=principal.handle, scopes=sorted(principal.scopes),
            expires_at=principal.expires_at,
        ).model_dump(mode="json")

    async def _subscribe(self, params: Any) -> dict[str, Any]:
        """`events.subscribe`: push the caller's events after a cursor as `event` notifications."""
        if self._streaming:
            raise Conflict("this connection already streams events")
        self._streaming = True
        try:
            stream = self._hub.events_stream(await self._caller(), params)
            assert self._tasks is not None
            result: dict[str, Any] = await self._tasks.start(self._pump_events, stream)
        except HubError:
            self._streaming = False
            raise
        return result

    async def _pump_events(
        self, stream: AbstractAsyncContextManager[EventStream], *, task_status: TaskStatus[dict[str, Any]]
    ) -> None:
        async with stream as events:
            task_status.started(SubscribeResult(after=events.start).model_dump(mode="json"))
            try:
                while True:
                    batch = await events.next_batch(EVENT_BATCH)
                    # Checked per batch, as per call: a revoked key or a suspension ends the stream at once.
                    await self._caller()
                    async with self._sending():
                        await self._write([_event_frames.frame(event) for event in batch])
            except SubscriberLagged as lag:
                reason = f"too slow for live events; resume after cursor {lag.last_cursor}"
                self._close(ws_protocol.TRY_AGAIN_LATER, reason)
            except HubError as error:  # the credential no longer holds
                self._close(ws_protocol.UNAUTHORIZED, error.message[:120])


async def websocket_app(scope: Scope, receive: Receive, send: Send) -> None:
    """`/ws` as a bare ASGI app, which `bridges.app.HubApp` calls without the router: every coroutine
    frame between the server and the session stays suspended under each connection for its life."""
    websocket = WebSocket(scope, receive, send)
    state = websocket.state
    await WebSocketSession(websocket, send, state.hub, state.framing, state.websockets).run()


async def websocket_endpoint(websocket: WebSocket) -> None:
    """`/ws` as the router's endpoint: the route is listed with the others, `HubApp` serves it first."""
    await websocket_app(websocket.scope, websocket.receive, websocket.send)
