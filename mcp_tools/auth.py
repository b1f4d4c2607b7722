"""Auth for `/mcp`: the hub's bearer access tokens and API keys, through the SDK's `TokenVerifier`.

The SDK's `BearerAuthBackend` asks `HubTokenVerifier` about the `Authorization: Bearer` credential of
every HTTP request, and puts the result where `get_access_token()` reads it, which is how a tool
learns its caller. The `AccessToken` names the agent as client and subject, so the SDK binds a
legacy session to the agent that opened it: the same agent may go on with a refreshed token or its
API key, another agent's token gets 404 for that session.

A request without an accepted credential gets 401 with the RFC 9728 protected-resource metadata
URL in `WWW-Authenticate`. The hub is not an OAuth authorization server: clients are configured
with a token or key (see docs/mcp.md). The metadata names the hub itself as the issuer of its
tokens, which is what it is.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Final

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from protocol.errors import HubError
from protocol.identity import Scope as HubScope

from .access import InProcessLink, VerifiedToken

METADATA_PATH: Final = "/.well-known/oauth-protected-resource"


class HubTokenVerifier(TokenVerifier):
    """Accepts what the hub accepts: an access token (JWT) or an API key, checked against revocation."""

    def __init__(self, link: InProcessLink) -> None:
        self._link = link

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await self._link.principal(token)
        except HubError:
            return None
        agent_id = principal.agent_id
        assert agent_id is not None
        return VerifiedToken(
            token=token,
            client_id=agent_id,
            subject=agent_id,
            scopes=sorted(scope.value for scope in principal.scopes),
            expires_at=int(principal.expires_at.timestamp()) if principal.expires_at else None,
        ).with_caller(self._link.caller_of(principal))


def base_url(scope: Scope, public_url: str) -> str:
    """The hub's base URL as this request reached it (or as configured)."""
    if public_url:
        return public_url.rstrip("/")
    return str(Request(scope).base_url).rstrip("/")


class RequireCaller:
    """401 for a request to `/mcp` without an accepted credential, pointing at the resource metadata."""

    def __init__(self, app: ASGIApp, resource_path: str, public_url: str) -> None:
        self._app = app
        self._resource_path = resource_path
        self._public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if isinstance(scope.get("user"), AuthenticatedUser):
            await self._app(scope, receive, send)
            return
        presented = any(name == b"authorization" for name, _ in scope.get("headers", ()))
        description = ("the access token or API key is invalid, expired or revoked" if presented
                       else "authentication required: send Authorization: Bearer <access token or API key>")
        metadata = (base_url(scope, self._public_url) + METADATA_PATH + self._resource_path).replace('"', "%22")
        challenge = f'Bearer error="invalid_token", error_description="{description}", resource_metadata="{metadata}"'
        body = json.dumps({"error": "invalid_token", "error_description": description}).encode()
        response = Response(body, status_code=401, media_type="application/json",
                            headers={"WWW-Authenticate": challenge})
        await response(scope, receive, send)


def protected_resource_metadata(resource_path: str, public_url: str) -> Callable[[Request], Awaitable[Response]]:
    """The RFC 9728 document for the resource at `resource_path` (served unauthenticated)."""

    async def endpoint(request: Request) -> Response:
        base = base_url(request.scope, public_url)
        return JSONResponse(
            {
                "resource": base + resource_path,
                "authorization_servers": [base],
                "scopes_supported": [scope.value for scope in HubScope if scope is not HubScope.ADMIN],
                "bearer_methods_supported": ["header"],
                "resource_name": "Parley MCP",
            },
            headers={"Access-Control-Allow-Origin": "*"},
        )

    return endpoint
