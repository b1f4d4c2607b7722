"""Push: `parley://inbox` and `parley://conversations/{id}` change when the subscriber's events say so.

The trigger is the hub's event flow, not the tool calls of this process: a subscriber's events are
followed through the hub (`events.follow_events`, the same `events.list` long poll on both paths
to a hub), so a message sent over the WebSocket, REST, another MCP session or another process
updates the recipient's resources the same way. Every event touches the inbox and its
conversation's resource.

- 2025-11-25 (handshake era): `resources/subscribe` starts one follower per connection, in the
  server's task group (`lifespan`); it sends `notifications/resources/updated` on the connection's
  standalone channel (the GET stream on streamable HTTP) for the URIs subscribed. It ends when the
  last URI is unsubscribed, when the connection closes (its teardown stack cancels it), or when the
  credential is refused.
- 2026-07-28: `subscriptions/listen` is one long request; its follower runs in a task group owned
  by that request and feeds the SDK's `ListenHandler` (ack first, subscription-id stamping,
  filtering, bounded buffer), which ends the stream gracefully when the credential is refused.

Each follower starts from the newest event at the moment of subscribing (before the subscribe or
the listen ack is answered), so whatever happens after the client has its answer is reported.
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import ListenHandler, ResourceUpdated, ServerEvent
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    UnsubscribeRequestParams,
)

from protocol.errors import HubError

from .access import Access
from .events import Events, follow_events, head_cursor
from .resources import INBOX_URI, PINNED_MEMORIES_URI, conversation_uri, document_uri

log = logging.getLogger(__name__)

MAX_LISTENS: Final = 1024
LISTEN_BUFFER: Final = 256
_WATCH: Final = "parley.push.watch"


def touched(events: Events) -> set[str]:
    """The resources a batch of the subscriber's events changes."""
    uris: set[str] = set()
    for event in events:
        if event["type"].startswith("memory."):
            if event["conversation_id"] is None:  # a private memory: the pinned ones may have changed
                uris.add(PINNED_MEMORIES_URI)
        elif event["type"] == "documents.progress":
            uris.add(document_uri(event["document"]["document_id"]) if event.get("document") else INBOX_URI)
        elif event["conversation_id"] is not None:  # a workflow's events change no resource
            uris |= {INBOX_URI, conversation_uri(event["conversation_id"])}
    return uris


def hub_error(error: HubError) -> MCPError:
    return MCPError(code=error.jsonrpc_code, message=error.message, data=error.to_dict())


def connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection:
    """The connection a request arrived on: its per-connection state and teardown stack.

    mcp 2.3.0 hands request handlers a per-request `ServerSession` that proxies the `Connection`
    without exposing it (its own `Context.connection` is not wired in yet); this reads it there. The
    SDK is pinned, and the legacy push tests fail if the attribute moves.
    """
    return ctx.session._connection


@dataclass
class _Watch:
    """The legacy subscriptions of one connection and the follower serving them."""

    credential: str
    uris: set[str] = field(default_factory=set)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    ready: anyio.Event = field(default_factory=anyio.Event)
    """Set once the follower knows where to start (or the first subscribe failed)."""


class _StreamBus:
    """A `SubscriptionBus` for one listen stream: the follower publishes once the stream has subscribed."""

    def __init__(self) -> None:
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}
        self.subscribed = anyio.Event()

    async def publish(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            listener(event)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener
        self.subscribed.set()

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe


class Push:
    """The push state of one running server: the task group legacy followers run in."""

    def __init__(self, access: Access, tasks: TaskGroup) -> None:
        self.access = access
        self._tasks = tasks
        self._listens = 0

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> None:
        credential = self.access.current_credential()
        connection = connection_of(ctx)
        watch: _Watch | None = connection.state.get(_WATCH)
        if watch is None:
            watch = connection.state[_WATCH] = _Watch(credential)
            try:
                after = await head_cursor(await self.access.link.connect(credential))
            except BaseException:
                del connection.state[_WATCH]
                watch.ready.set()
                raise
            connection.exit_stack.callback(watch.scope.cancel)
            self._tasks.start_soon(self._follow, connection, watch, after)
            watch.ready.set()
        else:
            await watch.ready.wait()  # a concurrent first subscribe is still finding where "now" is
            if connection.state.get(_WATCH) is not watch:  # ... and failed: start over
                await self.subscribe(ctx, uri)
                return
        watch.credential = credential
        watch.uris.add(uri)

    def unsubscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> None:
        connection = connection_of(ctx)
        watch: _Watch | None = connection.state.get(_WATCH)
        if watch is None:
            return
        watch.uris.discard(uri)
        if not watch.uris:
            watch.scope.cancel()
            del connection.state[_WATCH]

    def refresh_credential(self, ctx: ServerRequestContext[Any, Any]) -> None:
        """Follow with the newest credential the connection's client presented (it may refresh tokens)."""
        watch: _Watch | None = connection_of(ctx).state.get(_WATCH)
        credential = self.access.credential()
        if watch is not None and credential:
            watch.credential = credential

    async def _follow(self, connection: Connection, watch: _Watch, after: int) -> None:
        async def deliver(events: Events) -> None:
            for uri in sorted(touched(events) & watch.uris):
                await connection.send_resource_updated(uri)

        with watch.scope:
            try:
                await follow_events(self.access.link, lambda: watch.credential, after, deliver)
            except HubError as error:
                log.info("resource updates for a session stopped: %s", error.message)
        if connection.state.get(_WATCH) is watch:
            del connection.state[_WATCH]

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        if self._listens >= MAX_LISTENS:
            raise MCPError(code=INTERNAL_ERROR, message="Subscription limit reached")
        credential = self.access.current_credential()
        after = await head_cursor(await self.access.link.connect(credential))
        bus = _StreamBus()
        stream = ListenHandler(bus, max_subscriptions=1, max_buffered_events=LISTEN_BUFFER)

        async def follow() -> None:
            async def deliver(events: Events) -> None:
                for uri in sorted(touched(events)):
                    await bus.publish(ResourceUpdated(uri=uri))

            await bus.subscribed.wait()
            try:
                await follow_events(self.access.link, lambda: credential, after, deliver)
            except HubError as error:
                log.info("a listen stream ends: %s", error.message)
            stream.close()  # the client re-listens, with a fresh credential

        self._listens += 1
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                result = await stream(ctx, params)
                tg.cancel_scope.cancel()
        finally:
            self._listens -= 1
        return result


def _push(ctx: ServerRequestContext[Any, Any]) -> Push:
    push = ctx.lifespan_context
    assert isinstance(push, Push), "the server was not built by mcp_tools.server.build_server"
    return push


async def _on_subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
    try:
        await _push(ctx).subscribe(ctx, str(params.uri))
    except HubError as error:
        raise hub_error(error) from None
    return EmptyResult()


async def _on_unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
    _push(ctx).unsubscribe(ctx, str(params.uri))
    return EmptyResult()


async def _on_listen(
    ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
) -> SubscriptionsListenResult:
    try:
        return await _push(ctx).listen(ctx, params)
    except HubError as error:
        raise hub_error(error) from None


async def _refresh_credential(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    if isinstance(ctx.lifespan_context, Push) and ctx.request_id is not None:
        ctx.lifespan_context.refresh_credential(ctx)
    return await call_next(ctx)


def lifespan(access: Access) -> Callable[[MCPServer[Push]], Any]:
    """The server's lifespan: the task group legacy followers run in, cancelled when the server stops."""

    @asynccontextmanager
    async def run(server: MCPServer[Push]) -> AsyncIterator[Push]:
        async with anyio.create_task_group() as tasks:
            try:
                yield Push(access, tasks)
            finally:
                tasks.cancel_scope.cancel()

    return run


def install(server: MCPServer[Push]) -> None:
    """Serve `resources/subscribe`/`unsubscribe` (2025-11-25) and `subscriptions/listen` (2026-07-28)."""
    lowlevel = server._lowlevel_server  # MCPServer registers neither legacy method itself
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, _on_subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _on_unsubscribe)
    lowlevel.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, _on_listen)
    server.middleware.append(_refresh_credential)
