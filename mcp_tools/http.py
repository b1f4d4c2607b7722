"""Streamable HTTP at `/mcp` on the hub's own port (both protocol eras, both event loops).

`McpEndpoint` is built with the app (its routes must exist before the app starts) and run by the
app's lifespan with the hub: a Starlette `Mount`/`Route` never runs a mounted app's lifespan, so
the SDK's session manager is started here, from `running(hub)`, and stopped before the hub closes.

The request path: the SDK's `AuthenticationMiddleware` + `BearerAuthBackend` (asking
`HubTokenVerifier`), the SDK's `AuthContextMiddleware` (makes `get_access_token()` work in tools),
`RequireCaller` (401 with the resource metadata), then the session manager. SSE responses stay on
(JSON responses lose progress and 2026-era cancellation), and the SSE-polling feature
(`close_sse_stream`, an event store) is not used: under trio it drops events. In a worker of `parley
serve --workers N`, a `SessionRouter` in front sends each session's requests to the worker that holds it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import Final
from urllib.parse import urlsplit

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from hub.core import Hub

from .access import Access, InProcessLink, request_caller, request_credential
from .auth import METADATA_PATH, HubTokenVerifier, RequireCaller, protected_resource_metadata
from .profiles import Profile
from .server import build_server
from .session_routing import SessionRouter, Workers

MCP_PATH: Final = "/mcp"
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "[::1]")


def transport_security(public_url: str) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback hosts and origins, plus the configured public URL's."""
    hosts = [f"{host}:*" for host in LOOPBACK_HOSTS] + list(LOOPBACK_HOSTS)
    origins = [f"http://{host}:*" for host in LOOPBACK_HOSTS] + [f"http://{host}" for host in LOOPBACK_HOSTS]
    if public_url:
        parts = urlsplit(public_url)
        hosts.append(parts.netloc)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


class McpEndpoint:
    def __init__(self, profile: Profile = Profile.ALL, *, public_url: str = "",
                 session_idle_seconds: float = 30 * 60, workers: Workers | None = None) -> None:
        self._link = InProcessLink()
        self._public_url = public_url.rstrip("/")
        self._idle = session_idle_seconds
        self.server = build_server(Access(self._link, request_credential, request_caller), profile)
        self._manager: StreamableHTTPSessionManager | None = None
        self._app = AuthenticationMiddleware(
            AuthContextMiddleware(RequireCaller(self._serve, MCP_PATH, self._public_url)),
            backend=BearerAuthBackend(HubTokenVerifier(self._link)),
        )
        # A worker of `--workers`: each session's requests go to the worker that holds it.
        self._router = SessionRouter(self._app, workers) if workers is not None else None

    def routes(self) -> list[BaseRoute]:
        return [
            Route(MCP_PATH, endpoint=self._router or self._app),
            Route(METADATA_PATH + MCP_PATH, endpoint=protected_resource_metadata(MCP_PATH, self._public_url),
                  methods=["GET"]),
        ]

    @asynccontextmanager
    async def running(self, hub: Hub) -> AsyncIterator[None]:
        """Serve `/mcp` for `hub` until the block ends; then end every session and stream."""
        manager = StreamableHTTPSessionManager(
            app=self.server._lowlevel_server,  # the session manager serves the low-level server
            security_settings=transport_security(self._public_url),
            session_idle_timeout=self._idle,
        )
        self._link.bind(hub)
        try:
            async with manager.run(), self._router.running() if self._router else nullcontext():
                self._manager = manager
                try:
                    yield
                finally:
                    self._manager = None
        finally:
            self._link.bind(None)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self._manager
        if manager is None:
            await PlainTextResponse("the MCP endpoint is not running", status_code=503)(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)
