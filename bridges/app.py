"""The composition root: builds the store, the hub and every edge, and mounts them on one port."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from hub.clock import Clock
from hub.config import Settings
from hub.core import Hub
from hub.secrets import ServerKeys
from mcp_tools.http import McpEndpoint
from mcp_tools.profiles import Profile
from mcp_tools.session_routing import Workers
from storage import migrations
from storage.store import Store, create_store_engine

from .docs_page import docs_routes
from .files import file_routes
from .forwarded import TrustedProxies
from .front_page import front_page_routes
from .http_framing import CloseWhenBodyUnread, RefuseAmbiguousFraming
from .http_rpc import rpc_endpoint
from .jsonrpc import Framing
from .openapi import openapi_document
from .rest import http_error, rest_routes
from .routing import IndexedRouter
from .sse import event_stream
from .ws_rpc import WebSocketSessions, websocket_app, websocket_endpoint

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def migrate(settings: Settings) -> None:
    """Apply every pending migration to the configured database (blocking)."""
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_store_engine(settings.store_url())
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()


YOUNG_COLLECTION_THRESHOLD: Final = 10_000
"""New objects between two collections of the youngest generation (Python's default: 700)."""


def settle_heap() -> None:
    """Put what startup made out of the cyclic garbage collector's reach, and collect young objects less
    often: a process serving the hub calls this once its hub runs.

    Startup leaves about 200,000 objects that live as long as the process (modules, pydantic schemas,
    table metadata, compiled statements), and every full collection walked them all: in a 16-second
    `bench.send` run, 27 pauses of about 110 ms each, a fifth of the hub's CPU and most of its p99
    (bench/RESULTS.md). Frozen, a full collection walks only what requests made since. Garbage from
    startup is collected first, so none of it is kept for good.

    A request makes thousands of short-lived objects, which reference counting frees. At 700 the
    collector still ran every few requests and walked the objects of the requests in flight: 6% of
    an MCP `send_message`'s CPU, a third of that at 10,000.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


@asynccontextmanager
async def running_hub(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Hub]:
    """A migrated store and a running hub (on `clock`, by default the real one); on exit, queued writes
    commit before the store closes."""
    await anyio.to_thread.run_sync(migrate, settings)
    keys = await anyio.to_thread.run_sync(ServerKeys.load_or_create, settings.secrets_path())
    store = Store(create_store_engine(settings.store_url()))
    hub = Hub(settings, store, keys, clock)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            try:
                yield hub
            finally:
                hub.close()
    finally:
        store.dispose()


async def health(request: Request) -> JSONResponse:
    hub: Hub = request.state.hub
    body: dict[str, Any] = {
        "status": "ok",
        "version": VERSION,
        "uptime_seconds": round(hub.clock.monotonic() - hub.started_monotonic, 3),
        "time": hub.clock.now().isoformat().replace("+00:00", "Z"),
    }
    if hub.cluster is not None:  # unlinked still serves: events come from the store's catch-up
        body["cluster"] = {"node": hub.cluster.node_id, "linked": hub.cluster.linked}
    return JSONResponse(body)


async def ready(request: Request) -> JSONResponse:
    hub: Hub = request.state.hub
    if await hub.store.ping():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable", "reason": "the store does not answer"}, status_code=503)


async def metrics(request: Request) -> PlainTextResponse:
    hub: Hub = request.state.hub
    return PlainTextResponse(hub.metrics.render(), media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(VERSION))


class HubApp(Starlette):
    """Starlette, with an `IndexedRouter`, and `/ws` called straight from the server rather than through
    the middleware stack and the router.

    A WebSocket's ASGI call lasts as long as its connection, and every layer it passed through stays
    suspended under it: nine coroutine frames and the exception handlers' closures, about 4.5 KiB of
    each idle connection's 30 (tracemalloc). None of them does anything for `/ws`: the framing check
    is for HTTP only, the error and exception middleware re-raise whatever a WebSocket endpoint raises
    (this one raises no `HTTPException` or `WebSocketException`), and `TrustedProxies`, when configured,
    wraps `websocket` here as it wraps the stack.
    """

    def __init__(self, *, routes: list[BaseRoute], lifespan: Lifespan[Starlette], websocket_route: WebSocketRoute,
                 websocket: ASGIApp, **kwargs: Any) -> None:
        super().__init__(routes=routes, lifespan=lifespan, **kwargs)
        self.router = IndexedRouter(routes, lifespan=lifespan)
        self._websocket_route = websocket_route
        self._websocket = websocket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self._websocket_route.matches(scope)[0] is Match.FULL:
            scope["app"] = self
            await self._websocket(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, workers: Workers | None = None) -> Starlette:
    """The hub's ASGI app; `workers` when it is a worker of `parley serve --workers N` (MCP sessions are
    routed to the worker that holds them)."""
    mcp = McpEndpoint(Profile(settings.mcp_tools), public_url=settings.public_url,
                      session_idle_seconds=settings.mcp_session_idle_seconds, workers=workers)
    websockets = WebSocketSessions()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # The MCP session manager starts with the hub and stops before it (a Route runs no lifespan).
        async with running_hub(settings) as hub, mcp.running(hub):
            websockets.count_in(hub.metrics)
            log.info("hub ready on %s", settings.store_url().split("@")[-1])
            settle_heap()
            yield {"hub": hub, "framing": Framing(max_batch=settings.max_batch, max_depth=settings.max_json_depth),
                   "websockets": websockets}

    ws_route = WebSocketRoute("/ws", websocket_endpoint)  # in the routes, but served by HubApp directly
    routes = [
        *front_page_routes(settings.public_url),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/rpc", rpc_endpoint, methods=["POST"]),
        ws_route,
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api/events/stream", event_stream, methods=["GET"]),
        *docs_routes(),
        *file_routes(),
        *rest_routes(),
        *mcp.routes(),
    ]
    middleware = [Middleware(RefuseAmbiguousFraming), Middleware(CloseWhenBodyUnread)]
    ws: ASGIApp = websocket_app
    if settings.trusted_proxies:
        # Behind a trusted load balancer, the client address (for per-address rate limits) is the one it forwards.
        middleware.append(Middleware(TrustedProxies, networks=settings.trusted_proxies))
        ws = TrustedProxies(ws, networks=settings.trusted_proxies)
    app = HubApp(routes=routes, lifespan=lifespan, middleware=middleware,
                 exception_handlers={404: http_error, 405: http_error}, websocket_route=ws_route, websocket=ws)
    app.state.websockets = websockets  # for the runner, which closes them when the server stops
    return app
