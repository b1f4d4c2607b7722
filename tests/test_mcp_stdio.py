"""`parley mcp`: the stdio server a desktop client starts, driven by the SDK's `mcp.Client` as a subprocess,
on both protocol eras and both event loops: against a running hub (`--hub URL`), and on the embedded store.
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from .client import Agent, HubClient
from .conftest import diagonal
from .mcp_support import ERA, WAIT, Updates, call, call_error, mode, stdio_client, subscribe, unique
from .servers import drop_postgres_database, make_server, parley_command

__all__ = ["mode"]  # the fixture, imported for its parametrization


def remote_args(hub: HubClient, anyio_backend: str) -> tuple[str, ...]:
    return ("--hub", hub.server.url, "--backend", anyio_backend, "--tools", "messaging")


async def test_stdio_against_a_running_hub_runs_tools_as_the_keys_agent_and_waits_cancellably(
    hub: HubClient, alice: Agent, bob: Agent, mode: str, anyio_backend: str
) -> None:
    env = {"PARLEY_API_KEY": await hub.api_key(alice)}
    async with stdio_client(env, mode, *remote_args(hub, anyio_backend)) as a:
        assert a.protocol_version == ERA[mode]
        assert len((await a.list_tools()).tools) == 15
        assert (await call(a, "whoami"))["agent_id"] == alice.agent_id
        sent = await call(a, "send_message", to=bob.handle, text="from the desktop")
        mine = await hub.call("messages.get", {"message_id": sent["message_id"]}, token=bob.access_token)
        assert (mine["sender_id"], mine["body"]) == (alice.agent_id, "from the desktop")
        assert await call_error(a, "read_messages", conversation="cnv_missing") == "not_found"

        cursor = (await call(a, "wait_for_messages", timeout=0))["cursor"]
        arrived: dict[str, Any] = {}

        async def wait() -> None:
            arrived.update(await call(a, "wait_for_messages", timeout=WAIT, after=cursor))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            reply = await hub.call("messages.send", {"to": alice.handle, "body": "got it"}, token=bob.access_token)
        assert [(m["id"], m["sender"]) for m in arrived["messages"]] == [(reply["message_id"], bob.handle)]

        with anyio.fail_after(WAIT):  # a wait the client gives up on ends at once; the session goes on
            with anyio.move_on_after(0.5) as scope:
                await a.call_tool("wait_for_messages", {"timeout": 100})
        assert scope.cancelled_caught
        assert (await call(a, "whoami"))["agent_id"] == alice.agent_id


async def test_stdio_pushes_updates_of_a_remote_hubs_events(
    hub: HubClient, alice: Agent, bob: Agent, mode: str, anyio_backend: str
) -> None:
    env = {"PARLEY_API_KEY": await hub.api_key(alice)}
    updates = Updates()
    async with stdio_client(env, mode, *remote_args(hub, anyio_backend), message_handler=updates) as a:
        if mode == "legacy":
            await subscribe(a, "parley://inbox")
            await hub.call("messages.send", {"to": alice.handle, "body": "knock knock"}, token=bob.access_token)
            await updates.until("parley://inbox")
        else:
            async with a.listen(resource_subscriptions=["parley://inbox"]) as stream:
                await hub.call("messages.send", {"to": alice.handle, "body": "knock knock"}, token=bob.access_token)
                with anyio.fail_after(WAIT):
                    event = await anext(aiter(stream))
                assert event.uri == "parley://inbox"  # type: ignore[union-attr]


@diagonal  # each loop and each store once; both eras on each
async def test_stdio_on_the_embedded_store_serves_its_agent(
    tmp_path_factory: pytest.TempPathFactory, store_kind: str, mode: str, anyio_backend: str
) -> None:
    server = make_server(anyio_backend, store_kind, tmp_path_factory.mktemp("mcp-embedded"))
    try:
        bootstrap = server.run_cli("admin", "bootstrap", "--handle", unique("desk")[:32])
        assert bootstrap.returncode == 0, bootstrap.stderr
        admin = json.loads(bootstrap.stdout)
        env = {**server.env, "PARLEY_API_KEY": admin["api_key"]}
        async with stdio_client(env, mode, "--backend", anyio_backend) as client:
            assert (await call(client, "whoami"))["agent_id"] == admin["agent_id"]
            group = await call(client, "create_group", title="Notes to self", members=[])
            sent = await call(client, "send_message", conversation=group["conversation_id"], text="remember this")
            thread = await call(client, "read_messages", conversation=group["conversation_id"], unread_only=False)
            assert thread["messages"][-1]["id"] == sent["message_id"]
            inbox = json.loads((await client.read_resource("parley://inbox")).contents[0].text)  # type: ignore[union-attr]
            assert inbox["conversations"][0]["name"] == "Notes to self"
    finally:
        if server.database_url:
            drop_postgres_database(server.database_url)


@diagonal  # the refusal is the command's, before any store or loop matters
async def test_stdio_refuses_to_start_without_a_working_key(hub: HubClient) -> None:
    async def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
        with anyio.fail_after(60):
            return await anyio.run_process(parley_command("mcp", *args), env={**os.environ, **env},
                                           stdin=subprocess.DEVNULL, check=False)

    missing = await run({"PARLEY_API_KEY": ""}, "--hub", hub.server.url)
    assert missing.returncode == 2 and b"PARLEY_API_KEY" in missing.stderr
    refused = await run({"PARLEY_API_KEY": "prl_not_a_key"}, "--hub", hub.server.url)
    assert refused.returncode == 1 and b"unauthorized" in refused.stderr
    assert refused.stdout == b""  # stdout is the MCP channel: nothing but protocol goes there


async def test_stdio_refuses_a_data_dir_that_holds_no_store_and_makes_none(anyio_backend: str, tmp_path: Path) -> None:
    """A desktop client starts `parley mcp` in a directory of its own. Without this refusal it made a new,
    empty store there and then called the user's valid key invalid."""
    env = {name: value for name, value in os.environ.items() if name not in ("PARLEY_DATA_DIR", "PARLEY_DATABASE_URL")}
    with anyio.fail_after(60):
        started = await anyio.run_process(parley_command("mcp"), env={**env, "PARLEY_API_KEY": "prl_any"},
                                          cwd=tmp_path, stdin=subprocess.DEVNULL, check=False)
    assert started.returncode == 2
    assert f"no Parley store at {tmp_path.resolve() / 'parley-data' / 'parley.db'}".encode() in started.stderr
    assert b"--data-dir" in started.stderr and started.stdout == b""
    assert list(tmp_path.iterdir()) == []
