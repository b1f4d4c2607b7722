"""Test-side helpers for the MCP tests: the SDK's own `mcp.Client` against an in-process server, a real
hub's `/mcp` over streamable HTTP, and `parley mcp` over stdio, on both protocol eras.

`mode="auto"` negotiates 2026-07-28 (the discover probe), `mode="legacy"` 2025-11-25 (the handshake).
"""

import json
import os
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning

from mcp_tools.access import Access, InProcessLink, fixed_credential
from mcp_tools.profiles import Profile
from mcp_tools.server import build_server

from .client import HubClient
from .inprocess import LocalAgent, LocalHub
from .servers import HubServer, parley_command

WAIT: Final = 15.0
"""Upper bound for anything a test waits on; a correct hub answers far sooner."""
MODES: Final = ("auto", "legacy")
ERA: Final = {"auto": "2026-07-28", "legacy": "2025-11-25"}


SDK_CLIENT_TRIO_GET_STREAM = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <async_generator object :pytest.PytestUnraisableExceptionWarning"
)
"""The SDK's streamable-HTTP *client* leaves the 2025-11-25 GET stream's response generators (httpx2's
`Response.aiter_bytes`, httpcore2's `PoolByteStream`) to the garbage collector when it closes a session under
trio, and trio warns about each. A client-side leak of the pinned SDK in the test process; the server under test
runs in its own process. Only for tests whose MCP clients speak HTTP."""


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """The protocol era a test runs on: `auto` (2026-07-28) or `legacy` (2025-11-25)."""
    return str(request.param)


# -- results -----------------------------------------------------------------------------------------------


def ok(result: types.CallToolResult) -> dict[str, Any]:
    """The structured content of a successful tool call (fails the test on an error result)."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_code(result: types.CallToolResult) -> str:
    """The hub's error code an `isError` result carries: `{"error": {"code", "message", ...}}` as its text."""
    assert result.is_error, result.structured_content
    text = result.content[0]
    assert isinstance(text, types.TextContent), result.content
    return str(json.loads(text.text)["error"]["code"])


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    with anyio.fail_after(WAIT):
        return ok(await client.call_tool(tool, arguments))


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    with anyio.fail_after(WAIT):
        return error_code(await client.call_tool(tool, arguments))


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


# -- notifications -----------------------------------------------------------------------------------------


class Updates:
    """The `notifications/resources/updated` a legacy client receives (its `message_handler`)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._arrived = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.seen.append(str(message.params.uri))
            arrived, self._arrived = self._arrived, anyio.Event()
            arrived.set()

    async def until(self, uri: str) -> None:
        """Wait for an update of `uri` (one received since `seen` was last cleared counts)."""
        with anyio.fail_after(WAIT):
            while uri not in self.seen:
                await self._arrived.wait()


async def subscribe(client: Client, uri: str) -> None:
    """`resources/subscribe` (2025-11-25 only; the SDK marks it deprecated for the 2026 wire)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.subscribe_resource(uri)


async def unsubscribe(client: Client, uri: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.unsubscribe_resource(uri)


def in_process_server(local: LocalHub, credential: str, profile: Profile = Profile.ALL) -> MCPServer[Any]:
    """The MCP server of `profile` over a hub in this process, as the agent `credential` belongs to."""
    return build_server(Access(InProcessLink(local.hub), fixed_credential(credential)), profile)


class ToolHub(Protocol):
    """A hub the MCP tool tests drive: agents made and operations run directly, and MCP clients of its tools."""

    async def agent(self, stem: str) -> LocalAgent: ...

    async def api_key(self, agent: LocalAgent) -> tuple[str, str]: ...

    async def as_agent(self, agent: LocalAgent, name: str, params: dict[str, Any]) -> dict[str, Any]: ...

    def client(self, credential: str, mode: str, **options: Any) -> AbstractAsyncContextManager[Client]:
        """An MCP client of the tools, as the agent `credential` belongs to, on protocol era `mode`."""
        ...


@dataclass
class InProcessTools:
    """The tools' server in this process, over the SDK's memory transport, on a hub in this process."""

    local: LocalHub

    async def agent(self, stem: str) -> LocalAgent:
        return await self.local.agent(stem)

    async def api_key(self, agent: LocalAgent) -> tuple[str, str]:
        return await self.local.api_key(agent)

    async def as_agent(self, agent: LocalAgent, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.local.as_agent(agent, name, params)

    def client(self, credential: str, mode: str, **options: Any) -> AbstractAsyncContextManager[Client]:
        return Client(in_process_server(self.local, credential), mode=mode, cache=None, **options)


@dataclass
class HttpTools:
    """A real hub process's `/mcp`, over streamable HTTP."""

    server: HubServer
    hub: HubClient

    async def agent(self, stem: str) -> LocalAgent:
        agent = await self.hub.register(stem)
        return LocalAgent(agent.agent_id, agent.handle, agent.access_token, agent.refresh_token)

    async def api_key(self, agent: LocalAgent) -> tuple[str, str]:
        created = await self.hub.call("keys.create", {"name": "test"}, token=agent.access_token)
        return created["api_key"], created["key"]["key_id"]

    async def as_agent(self, agent: LocalAgent, name: str, params: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.hub.call(name, params, token=agent.access_token)
        return result

    def client(self, credential: str, mode: str, **options: Any) -> AbstractAsyncContextManager[Client]:
        return http_client(self.server, credential, mode, **options)


# -- a real hub over streamable HTTP, and `parley mcp` over stdio ----------------------------------------


@asynccontextmanager
async def http_client(server: HubServer, credential: str, mode: str, **options: Any) -> AsyncIterator[Client]:
    """The SDK client on the hub's `/mcp`, authenticated with `credential` (a token or an API key)."""
    headers = {"Authorization": f"Bearer {credential}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(WAIT, read=300)) as http:
        transport = streamable_http_client(server.url + "/mcp", http_client=http)
        async with Client(transport, mode=mode, cache=None, **options) as client:
            yield client


def stdio_parameters(env: dict[str, str], *args: str) -> StdioServerParameters:
    command = parley_command("mcp", *args)
    return StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=os.getcwd())


@asynccontextmanager
async def stdio_client(env: dict[str, str], mode: str, *args: str, **options: Any) -> AsyncIterator[Client]:
    """`parley mcp ARGS` as a subprocess, driven by the SDK client over its stdin/stdout."""
    async with Client(stdio_parameters(env, *args), mode=mode, cache=None, **options) as client:
        yield client
