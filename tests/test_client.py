"""The Python agent client (bridges.client.agent) against a real hub."""

import anyio
import pytest

from bridges.client.agent import ParleyClient
from protocol.agents import Profile
from protocol.errors import NotFound, Unauthorized
from protocol.identity import WhoamiResult

from .client import HubClient
from .conftest import ServerFactory


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
