"""How the MCP server reaches the hub: who is calling, and by which path.

Every tool body talks to the hub through a `HubCaller`: the caller's agent id and one `call(name,
params) -> dict` that runs an operation of the table as that agent. Two paths provide one:

- `InProcessLink` runs `Hub.dispatch` in this process with the caller's `Principal` (streamable
  HTTP at `/mcp`, and `parley mcp` on the embedded store).
- A remote link (in `bridges`, for `parley mcp --hub URL`) posts JSON-RPC to a running hub's `/rpc`.

The credential is looked up for every request (over HTTP when the request arrives, by the auth
middleware; otherwise by `Access.caller` for each tool call), so a revoked key or a suspended agent
stops working at once; and the caller is never a tool argument: it comes from the request's
bearer token (`get_access_token()`) or, for stdio, from the key the process was started with.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Protocol

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from pydantic import PrivateAttr

from hub.core import Hub
from hub.principal import Principal
from hub.usage import TOOL_CALLS
from protocol.errors import Internal, Unauthorized

MCP_ADDRESS: Final = "mcp"
"""The address principals of MCP callers carry (it keys rate limits of anonymous callers only)."""

Call = Callable[[str, Mapping[str, Any]], Awaitable[dict[str, Any]]]
"""Run one operation of the table (`"messages.send"`, params) and return its result as JSON data.

Raises `HubError` (the hub's own code and message) for every refusal."""


@dataclass(frozen=True)
class HubCaller:
    """One authenticated caller of the hub, for the length of one tool call or one push step."""

    agent_id: str
    call: Call
    tool_called: Callable[[], None] = lambda: None
    """Counts one tool call for the caller's usage (in-process only: a remote hub sees the calls it gets)."""


class HubLink(Protocol):
    async def connect(self, credential: str) -> HubCaller:
        """The caller behind `credential`, checked now.

        Raises:
            Unauthorized, Forbidden: the credential is refused (revoked, expired, suspended agent).
        """
        ...


class InProcessLink:
    """The hub of this process. Its hub may be bound after construction (the app's lifespan builds it)."""

    def __init__(self, hub: Hub | None = None) -> None:
        self._hub = hub

    def bind(self, hub: Hub | None) -> None:
        self._hub = hub

    async def principal(self, credential: str) -> Principal:
        """Who `credential` belongs to (see `HubLink.connect` for the errors)."""
        if self._hub is None:
            raise Internal("the hub is not running")
        principal = await self._hub.authenticate(credential, MCP_ADDRESS)
        if principal.agent_id is None:
            raise Unauthorized("a credential is required")
        return principal

    async def connect(self, credential: str) -> HubCaller:
        return self.caller_of(await self.principal(credential))

    def caller_of(self, principal: Principal) -> HubCaller:
        assert principal.agent_id is not None and self._hub is not None
        return HubCaller(principal.agent_id, partial(self._hub.dispatch, principal),
                         partial(self._hub.usage.count, principal.agent_id, TOOL_CALLS))


class VerifiedToken(AccessToken):
    """The SDK's `AccessToken` for a request, with the caller the hub verified its credential as when the
    request arrived (`auth.HubTokenVerifier`). A tool of that same request uses it, so one HTTP request
    costs one credential check, not two (an API key check is a store read)."""

    _caller: HubCaller | None = PrivateAttr(default=None)

    @property
    def caller(self) -> HubCaller | None:
        return self._caller

    def with_caller(self, caller: HubCaller) -> "VerifiedToken":
        self._caller = caller
        return self


Credential = Callable[[], str | None]
"""The credential of the request being served, or None."""


def request_credential() -> str | None:
    """The bearer credential of the current streamable-HTTP request (set by the SDK's auth middleware)."""
    token = get_access_token()
    return token.token if token is not None else None


def request_caller() -> HubCaller | None:
    """The caller the current streamable-HTTP request's credential was verified as on arrival, if any."""
    token = get_access_token()
    return token.caller if isinstance(token, VerifiedToken) else None


def fixed_credential(secret: str) -> Credential:
    """The one credential of a stdio server (or of an in-process test server)."""
    return lambda: secret


@dataclass(frozen=True)
class Access:
    link: HubLink
    credential: Credential
    verified: Callable[[], HubCaller | None] = lambda: None
    """The caller already verified for the current request (`request_caller` on HTTP), or None."""

    def current_credential(self) -> str:
        """The current request's credential.

        Raises:
            Unauthorized: the request carries none.
        """
        credential = self.credential()
        if not credential:
            raise Unauthorized("this MCP request carries no credential: send `Authorization: Bearer <token or key>`")
        return credential

    async def caller(self) -> HubCaller:
        """The caller of the current request: checked when the request arrived, or authenticated now."""
        verified = self.verified()
        if verified is not None:
            return verified
        return await self.link.connect(self.current_credential())
