"""The Python agent client (bridges.client.agent) against a real hub."""

import anyio
import pytest

from bridges.client.agent import ParleyClient
from protocol.agents import Profile
from protocol.errors import NotFound, Unauthorized
from protocol.identity import WhoamiResult

from .client import HubClient
from .conftest import ServerFactory, sqlite_only
from .tcp_proxy import TcpProxy


async def test_client_returns_typed_results_and_typed_errors(hub: HubClient) -> None:
    agent = await hub.register("typed")
    key = await hub.api_key(agent)
    async with ParleyClient(hub.server.url, key) as client:
        me = await client.call("auth.whoami")
        assert isinstance(me, WhoamiResult) and me.agent.agent_id == agent.agent_id
        profile = await client.call("agents.update_profile", {"description": "typed client"})
        assert isinstance(profile, Profile) and profile.description == "typed client"
        with pytest.raises(NotFound):
            await client.call("agents.get", {"agent": "nobody-by-this-name"})


async def test_client_with_a_refused_api_key_fails_to_open(hub: HubClient) -> None:
    agent = await hub.register("refused")
    key = await hub.api_key(agent)
    await hub.call("auth.recover", {"agent": agent.agent_id, "recovery_key": agent.recovery_key})  # revokes the key
    with pytest.raises(Unauthorized):
        async with ParleyClient(hub.server.url, key):
            pass


async def test_client_reconnects_after_the_hub_restarts(start_hub: ServerFactory) -> None:
    server = start_hub()
    async with HubClient(server) as hub:
        agent = await hub.register("phoenix")
        key = await hub.api_key(agent)
    async with ParleyClient(server.url, key, call_timeout=30) as client:
        assert (await client.call("auth.whoami")).agent.handle == agent.handle
        assert await anyio.to_thread.run_sync(server.stop) == 0
        await anyio.to_thread.run_sync(server.launch)
        with anyio.fail_after(30):
            me = await client.call("auth.whoami")
        assert me.agent.handle == agent.handle
        assert client.connections == 2


async def test_events_resume_across_a_hub_restart_without_loss_or_duplicates(start_hub: ServerFactory) -> None:
    server = start_hub()
    async with HubClient(server) as hub:
        sender = await hub.register("sender")
        receiver = await hub.register("receiver")
        key = await hub.api_key(receiver)
        received: list[str] = []
        async with ParleyClient(server.url, key) as client:

            async def listen() -> None:
                async for event in client.events():
                    if event.type == "message.created" and event.message and event.message.body:
                        received.append(event.message.body)
                        if len(received) == 20:
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                with anyio.fail_after(60):
                    while client.cursor is None:  # subscribed
                        await anyio.sleep(0.01)
                    for i in range(10):
                        await hub.call("messages.send", {"to": receiver.handle, "body": f"m{i}"},
                                       token=sender.access_token)
                    assert await anyio.to_thread.run_sync(server.stop) == 0
                    await anyio.to_thread.run_sync(server.launch)
                    for i in range(10, 20):
                        await hub.call("messages.send", {"to": receiver.handle, "body": f"m{i}"},
                                       token=sender.access_token)
    assert received == [f"m{i}" for i in range(20)]
    assert client.connections >= 2


@sqlite_only
async def test_a_call_waiting_through_a_failed_reconnect_goes_through_once_the_hub_lets_it_in(
    start_hub: ServerFactory,
) -> None:
    """Issue 17, defect 1: a reconnect that fails while authenticating must not strand waiting calls.

    The auth bucket holds one token that comes back after 4 s: the client's first connection spends
    it, so every reconnect in the next 4 s fails at `auth.refresh` with `rate_limited`. A call made
    while the connection is down waits through those failed attempts and must go through once one
    succeeds, long before its own timeout.
    """
    server = start_hub(rate_auth="1:0.25")
    with TcpProxy("127.0.0.1", server.port) as proxy:
        async with ParleyClient(f"http://127.0.0.1:{proxy.port}", server.admin["api_key"], call_timeout=20) as client:
            proxy.cut()
            with anyio.fail_after(10):
                while client._link is not None:  # the client has seen the connection drop
                    await anyio.sleep(0.01)
            answers: list[WhoamiResult] = []

            async def whoami() -> None:
                answers.append(await client.call("auth.whoami"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(whoami)
                await anyio.sleep(0.05)  # the call is waiting for a connection
                proxy.restore()
        assert answers[0].agent.handle == "admin"
        assert client.connections == 2
        assert client.failed_authentications >= 1, "no reconnect failed: the test did not test the defect"
