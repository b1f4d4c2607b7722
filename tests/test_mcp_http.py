"""MCP over streamable HTTP at `/mcp` of real `parley serve` processes (uvicorn on asyncio, hypercorn on trio,
SQLite and PostgreSQL), driven by the SDK's own `mcp.Client` on both protocol eras.
"""

import re
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from .client import Agent, HubClient
from .mcp_support import (
    ERA,
    SDK_CLIENT_TRIO_GET_STREAM,
    WAIT,
    Updates,
    call,
    call_error,
    http_client,
    mode,
    subscribe,
)
from .messaging import events_list_count

__all__ = ["mode"]  # the fixture, imported for its parametrization
pytestmark = SDK_CLIENT_TRIO_GET_STREAM

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def test_mcp_without_a_credential_is_401_with_the_protected_resource_metadata(hub: HubClient) -> None:
    answer = await hub.http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    metadata_url = re.search(r'resource_metadata="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    assert metadata_url == hub.server.url + "/.well-known/oauth-protected-resource/mcp"

    metadata = (await hub.http.get(metadata_url)).json()
    assert metadata["resource"] == hub.server.url + "/mcp"
    assert metadata["bearer_methods_supported"] == ["header"] and "messages:write" in metadata["scopes_supported"]

    refused = await hub.http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "authorization": "Bearer nope"})
    assert refused.status_code == 401 and "resource_metadata=" in refused.headers["www-authenticate"]


async def test_tools_run_as_the_agent_of_the_token_or_key(hub: HubClient, alice: Agent, bob: Agent, mode: str) -> None:
    bob_key = await hub.api_key(bob)
    async with http_client(hub.server, alice.access_token, mode) as a, http_client(hub.server, bob_key, mode) as b:
        assert a.protocol_version == ERA[mode]
        assert (await call(a, "whoami"))["agent_id"] == alice.agent_id
        assert (await call(b, "whoami"))["agent_id"] == bob.agent_id
        sent = await call(a, "send_message", to=bob.handle, text="over http")
        line = (await call(b, "inbox"))["conversations"][0]
        assert (line["conversation_id"], line["unread"]) == (sent["conversation_id"], 1)
        read = await call(b, "read_messages", conversation=sent["conversation_id"], mark_read=True)
        assert read["messages"][-1]["text"] == "over http" and read["unread"] == 0
        assert await call_error(b, "edit_message", message_id=sent["message_id"], text="not mine") == "forbidden"
        assert await call_error(a, "read_messages", conversation="cnv_missing") == "not_found"


async def test_a_session_cannot_be_used_with_another_agents_token(hub: HubClient, alice: Agent, bob: Agent) -> None:
    opened = await hub.http.post("/mcp", json=INITIALIZE,
                                 headers={**MCP_HEADERS, "authorization": f"Bearer {alice.access_token}"})
    assert opened.status_code == 200
    session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    tools_list = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    hijack = await hub.http.post("/mcp", json=tools_list,
                                 headers={**MCP_HEADERS, **session, "authorization": f"Bearer {bob.access_token}"})
    assert hijack.status_code == 404
    alice_key = await hub.api_key(alice)  # the same agent with another credential may go on
    same_agent = await hub.http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                     headers={**MCP_HEADERS, **session, "authorization": f"Bearer {alice_key}"})
    assert same_agent.status_code == 202


async def test_a_revoked_key_is_refused_at_the_next_call(hub: HubClient, alice: Agent, mode: str) -> None:
    key = await hub.api_key(alice)
    key_id = next(k["key_id"] for k in (await hub.call("keys.list", token=alice.access_token))["items"]
                  if key.startswith(k["prefix"]))
    async with http_client(hub.server, key, mode) as client:
        assert (await call(client, "whoami"))["agent_id"] == alice.agent_id
        await hub.call("keys.revoke", {"key_id": key_id}, token=alice.access_token)
        with pytest.raises(MCPError), anyio.fail_after(WAIT):
            await client.call_tool("whoami", {})


async def test_a_message_from_another_agent_updates_the_subscribed_inbox(
    hub: HubClient, alice: Agent, bob: Agent, mode: str
) -> None:
    """A subscribes (2025-11-25) or listens (2026-07-28); B sends over MCP, then over JSON-RPC; A is told both times."""
    updates = Updates()
    async with http_client(hub.server, alice.access_token, mode, message_handler=updates) as a, \
            http_client(hub.server, bob.access_token, mode) as b:
        first = await call(b, "send_message", to=alice.handle, text="first")
        conversation = f"parley://conversations/{first['conversation_id']}"
        sends = (
            lambda: call(b, "send_message", conversation=first["conversation_id"], text="via mcp"),
            lambda: hub.call("messages.send", {"conversation_id": first["conversation_id"], "body": "via rpc"},
                             token=bob.access_token),
        )
        if mode == "legacy":
            await subscribe(a, conversation)
            for send in sends:
                updates.seen.clear()
                await send()
                await updates.until(conversation)
            assert "parley://inbox" not in updates.seen  # only what was subscribed
        else:
            async with a.listen(resource_subscriptions=["parley://inbox"]) as stream:
                for send in sends:
                    await send()
                    with anyio.fail_after(WAIT):
                        event = await anext(aiter(stream))
                    assert event.uri == "parley://inbox"  # type: ignore[union-attr]
        assert (await call(a, "inbox"))["conversations"][0]["unread"] == 3


async def test_wait_for_messages_gets_what_another_agent_sends(
    hub: HubClient, alice: Agent, bob: Agent, mode: str
) -> None:
    async with http_client(hub.server, alice.access_token, mode) as a:
        cursor = (await call(a, "wait_for_messages", timeout=0))["cursor"]
        arrived: dict[str, Any] = {}

        async def wait() -> None:
            arrived.update(await call(a, "wait_for_messages", timeout=WAIT, after=cursor))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            sent = await hub.call("messages.send", {"to": alice.handle, "body": "ping"}, token=bob.access_token)
        assert [(m["id"], m["sender"], m["text"]) for m in arrived["messages"]] == [
            (sent["message_id"], bob.handle, "ping")]


async def test_cancelling_wait_for_messages_ends_the_hubs_long_poll(hub: HubClient, alice: Agent, mode: str) -> None:
    async with http_client(hub.server, alice.access_token, mode) as a:
        await assert_cancel_ends_the_long_poll(hub, lambda: a.call_tool("wait_for_messages", {"timeout": 100}))
        assert (await call(a, "whoami"))["agent_id"] == alice.agent_id


async def assert_cancel_ends_the_long_poll(hub: HubClient, start_waiting: Any) -> None:
    """Start a wait, cancel it on the client, and see the hub finish its `events.list` long poll at once.

    The wait asks the hub for the newest cursor first (an `invalid_request` outcome, by design), then
    long-polls for up to 25 s; a hub that did not cancel would finish that call only then, after `WAIT`.
    """
    started = await events_list_count(hub.http, "invalid_request")
    async with anyio.create_task_group() as tg:
        tg.start_soon(start_waiting)
        with anyio.fail_after(WAIT):
            while await events_list_count(hub.http, "invalid_request") == started:  # noqa: ASYNC110 - polls the hub
                await anyio.sleep(0.02)
        finished = await events_list_count(hub.http)
        tg.cancel_scope.cancel()
    with anyio.fail_after(WAIT):
        while await events_list_count(hub.http) == finished:  # noqa: ASYNC110 - polls the hub's /metrics
            await anyio.sleep(0.02)
