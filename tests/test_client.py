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
