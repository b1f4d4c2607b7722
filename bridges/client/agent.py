"""`ParleyClient`: what an autonomous agent uses to talk to a hub.

    async with ParleyClient("http://127.0.0.1:8080", api_key) as client:
        me = await client.call("auth.whoami")
        async for event in client.events():
            ...

It holds one WebSocket. It exchanges its API key for tokens and refreshes them before they
expire. If the connection drops, it reconnects with exponential backoff and resumes the event
stream from the last cursor it handed out, so the iterator sees every event once, in order.

A call that is in flight when the connection drops raises `ConnectionLost`: the client cannot know
whether the hub ran it. Retrying a send is safe with the same `client_msg_id`. Results come back as
the operation's result model, from the same table the hub uses, and errors as the `protocol.errors`
classes.
"""

import itertools
import json
import logging
import random
from types import TracebackType
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus
from pydantic import BaseModel

from hub.operations import OPERATIONS
from protocol import websocket as ws_protocol
from protocol.errors import HubError, InvalidRequest, Unauthorized
from protocol.events import EVENT_NOTIFICATION, SUBSCRIBE_METHOD, Event

from ._websocket import ConnectionClosed, HandshakeRejected, WebSocketConnection

log = logging.getLogger(__name__)

EVENT_BUFFER: Final = 10_000
REFRESH_MARGIN: Final = 0.8
"""Refresh the access token after this fraction of its lifetime."""


class ConnectionLost(Exception):
    """The connection dropped while a call was in flight; the hub may or may not have run it."""


class _NotSent(Exception):
    """The connection was already closed: the request never left, so it is safe to send again."""


class _Link:
    """One live WebSocket: matches responses to calls and hands notifications to the client."""

    def __init__(self, ws: WebSocketConnection, on_notification: "Any") -> None:
        self.ws = ws
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self.closed = anyio.Event()

    async def request(self, method: str, params: dict[str, Any] | None) -> Any:
        request_id = next(self._ids)
        done, slot = anyio.Event(), []
        self._waiting[request_id] = (done, slot)
        try:
            frame: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
            if params is not None:
                frame["params"] = params
            try:
                await self.ws.send_text(json.dumps(frame, separators=(",", ":")))
            except ConnectionClosed:
                raise _NotSent from None
            await done.wait()
        finally:
            self._waiting.pop(request_id, None)
        if not slot:
            raise ConnectionLost(f"the connection closed during {method}")
        response = slot[0]
        if "error" in response:
            raise HubError.from_dict(response["error"].get("data") or {"message": response["error"]["message"]})
        return response["result"]

    async def read_until_closed(self) -> None:
        try:
            while True:
                frame = json.loads(await self.ws.receive())
                if isinstance(frame, dict) and "method" in frame:
                    await self._on_notification(frame)
                elif isinstance(frame, dict) and frame.get("id") in self._waiting:
                    done, slot = self._waiting[frame["id"]]
                    slot.append(frame)
                    done.set()
        except ConnectionClosed as closed:
            log.info("connection closed: %s", closed)
        finally:
            self.closed.set()
            for done, _ in self._waiting.values():
                done.set()  # an empty slot tells the caller the connection was lost


class EventFeed:
    """The iterator `ParleyClient.events()` returns. A plain iterator, not an async generator, so
    leaving the loop early strands nothing for the garbage collector."""

    def __init__(self, client: "ParleyClient") -> None:
        self._client = client
        self._subscribed = False

    def __aiter__(self) -> "EventFeed":
        return self

    async def __anext__(self) -> Event:
        if not self._subscribed:
            await self._client._subscribe()
            self._subscribed = True
        return await self._client._next_event()


class ParleyClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        call_timeout: float = 30.0,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self.ws_url = url.replace("http://", "ws://", 1).rstrip("/") + "/ws"
        self._api_key = api_key
        self._call_timeout = call_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._link: _Link | None = None
        self._connected = anyio.Event()
        self._fatal: HubError | None = None
        self._refresh_token: str | None = None
        self._subscribed = False
        self.cursor: int | None = None
        """The cursor of the last event handed out by `events()`; resuming starts after it."""
        self._events_send, self._events_receive = anyio.create_memory_object_stream[Event](EVENT_BUFFER)
        self._tasks: TaskGroup | None = None
        self.connections = 0
        """How many times a connection was established (1 + reconnects)."""
        self.refreshes = 0
        """How many times the access token was refreshed on an open connection."""
        self.failed_authentications = 0
        """How many new connections failed to authenticate for a passing reason (rate limit, hub error)."""

    async def __aenter__(self) -> "ParleyClient":
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        try:
            with anyio.fail_after(self._call_timeout):
                await self._tasks.start(self._stay_connected)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tasks is not None
        self._tasks.cancel_scope.cancel()
        self._events_send.close()
        self._events_receive.close()
        try:
            return await self._tasks.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # surface the body's own exception, not a group of one
                raise group.exceptions[0] from None
            raise

    async def call(self, method: str, params: dict[str, Any] | BaseModel | None = None) -> Any:
        """Run one operation; its result model (or the raw result for connection-level methods).

        Raises:
            HubError: the hub refused the call (its subclass says why).
            ConnectionLost: the connection dropped before the answer came.
            TimeoutError: no connection within the call timeout.
        """
        if isinstance(params, BaseModel):
            params = params.model_dump(mode="json", exclude_unset=True)
        with anyio.fail_after(self._call_timeout):
            while True:
                link = await self._wait_connected()
                try:
                    result = await link.request(method, params)
                    break
                except _NotSent:
                    await link.closed.wait()
        operation = OPERATIONS.get(method)
        return operation.result.model_validate(result) if operation else result

    def events(self, after: int | None = None) -> "EventFeed":
        """Every event visible to the agent after `after` (default: the last one handed out, or now),
        in cursor order, exactly once, across reconnects: `async for event in client.events()`."""
        if after is not None:
            self.cursor = after
        return EventFeed(self)

    async def _subscribe(self) -> None:
        self._subscribed = True
        started = await self.call(SUBSCRIBE_METHOD, {"after": self.cursor})
        # Live from "now" still needs a position, so a reconnect resumes without a gap.
        self.cursor = started["after"] if self.cursor is None else self.cursor

    async def _next_event(self) -> Event:
        while True:
            try:
                event = await self._events_receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if self._fatal is not None:
                    raise self._fatal from None
                raise StopAsyncIteration from None
            if self.cursor is not None and event.cursor <= self.cursor:
                continue  # replayed after a reconnect: already handed out
            self.cursor = event.cursor
            return event

    async def _wait_connected(self) -> _Link:
        while self._link is None:
            if self._fatal is not None:
                raise self._fatal
            await self._connected.wait()
        return self._link

    async def _on_notification(self, frame: dict[str, Any]) -> None:
        if frame.get("method") == EVENT_NOTIFICATION and isinstance(frame.get("params"), dict):
            try:
                self._events_send.send_nowait(Event.model_validate(frame["params"]))
            except anyio.WouldBlock:
                # The application is not consuming events: drop the connection and resume later
                # from the last event it did take, rather than buffer without bound.
                if self._link is not None:
                    await self._link.ws.close(ws_protocol.GOING_AWAY, "client event buffer full")
        # heartbeats and other notifications need no answer

    async def _stay_connected(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, authenticate, resubscribe; on any drop, back off and do it again. Forever."""
        backoff = self._min_backoff
        started = False
        while True:
            try:
                ws = await WebSocketConnection.connect(self.ws_url)
            except (OSError, TimeoutError, HandshakeRejected) as exc:
                log.info("cannot connect to %s: %s", self.ws_url, exc)
            else:
                try:
                    if await self._serve_connection(ws, None if started else task_status):
                        started, backoff = True, self._min_backoff
                finally:
                    self._link = None
                    if self._connected.is_set():
                        # Its waiters have woken; the next connection gets a fresh event. One that was
                        # never set (authentication failed) is kept: calls wait on it for the next try.
                        self._connected = anyio.Event()
                    with anyio.CancelScope(shield=True):
                        await ws.close()
            if self._fatal is not None:
                if not started:
                    raise self._fatal
                self._connected.set()  # wake waiting calls: they raise the fatal error
                return
            await anyio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self._max_backoff)

    async def _serve_connection(self, ws: WebSocketConnection, task_status: TaskStatus[None] | None) -> bool:
        """Authenticate on a fresh connection and serve it until it closes; False if authentication failed."""
        link = _Link(ws, self._on_notification)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve_link, link, tg)
            try:
                expires_in = await self._authenticate(link)
            except Unauthorized as error:
                self._fatal = error  # the API key itself is refused: retrying cannot help
                self._connected.set()
                self._events_send.close()
                tg.cancel_scope.cancel()
                return False
            except (ConnectionLost, HubError) as error:
                log.info("authentication on a new connection failed: %s", error)
                self.failed_authentications += 1
                tg.cancel_scope.cancel()
                return False
            self._drain_stale_events()
            if self._subscribed:
                tg.start_soon(self._resubscribe, link, tg)
            self._link = link
            self.connections += 1
            self._connected.set()
            if task_status is not None:
                task_status.started()
            tg.start_soon(self._refresh_periodically, link, expires_in, tg)
        return True

    async def _serve_link(self, link: _Link, tg: TaskGroup) -> None:
        await link.read_until_closed()
        tg.cancel_scope.cancel()

    async def _authenticate(self, link: _Link) -> float:
        grant = None
        if self._refresh_token is not None:
            try:
                grant = await link.request("auth.refresh", {"refresh_token": self._refresh_token})
            except Unauthorized:
                grant = None  # the session ended; start a new one from the API key
        if grant is None:
            grant = await link.request("auth.token", {"api_key": self._api_key})
        self._refresh_token = grant["refresh_token"]
        await link.request(ws_protocol.AUTHENTICATE_METHOD, {"token": grant["access_token"]})
        return float(grant["expires_in"])

    # On failure these end the connection by cancelling its task group (whose owner then closes the
    # WebSocket and reconnects), not by `ws.close()` here: closing waits for the peer's close frame
    # by reading, while `_serve_link` is reading already (anyio raises BusyResourceError).
    async def _refresh_periodically(self, link: _Link, expires_in: float, tg: TaskGroup) -> None:
        try:
            while True:
                await anyio.sleep(expires_in * REFRESH_MARGIN)
                expires_in = await self._authenticate(link)
                self.refreshes += 1
        except (ConnectionLost, HubError) as error:
            log.info("token refresh failed: %s; reconnecting", error)
            tg.cancel_scope.cancel()

    async def _resubscribe(self, link: _Link, tg: TaskGroup) -> None:
        try:
            await link.request(SUBSCRIBE_METHOD, {"after": self.cursor})
        except InvalidRequest as error:
            # The hub does not know our cursor (its store was reset): reconnecting cannot help.
            self._fatal = error
            self._events_send.close()
            tg.cancel_scope.cancel()
        except (ConnectionLost, HubError) as error:
            log.info("resubscribing failed: %s; reconnecting", error)
            tg.cancel_scope.cancel()

    def _drain_stale_events(self) -> None:
        # Events buffered from the previous connection are replayed by the new subscription.
        while True:
            try:
                self._events_receive.receive_nowait()
            except anyio.WouldBlock:
                return
