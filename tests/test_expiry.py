"""Credentials end when they expire: API keys, refresh tokens, invite codes and access tokens.

Judged by the hub's clock, which these tests move forward (a hub in the test process on a
`ManualClock`); the expiry of an open WebSocket's token and the Python client's refresh before it
run against a real hub with a two-second token lifetime.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from bridges.client.agent import ParleyClient
from protocol.errors import Forbidden, HubError, Unauthorized

from .client import HubClient, RpcError, RpcSocket
from .conftest import ServerFactory, sqlite_only
from .inprocess import LocalHub, ManualClock, local_hub

pytestmark = pytest.mark.anyio

DAY = 24 * 3600


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def local(tmp_path: Path, store_kind: str, clock: ManualClock) -> AsyncIterator[LocalHub]:
    async with local_hub(tmp_path, store_kind, clock, registration="invite") as hub:
        yield hub


async def refused(local: LocalHub, credential: str | None, name: str,
                  params: dict[str, object] | None = None) -> HubError:
    with pytest.raises(HubError) as refusal:
        await local.call(credential, name, params)
    return refusal.value


async def test_an_api_key_works_until_it_expires_and_not_after(local: LocalHub, clock: ManualClock) -> None:
    admin = await local.hub.services.identity.bootstrap_admin("admin")
    key = admin[2].api_key
    created = await local.call(key, "keys.create", {"name": "day", "expires_in_days": 1})
    clock.advance(DAY - 60)
    assert (await local.call(created["api_key"], "auth.whoami"))["agent"]["handle"] == "admin"
    await local.call(None, "auth.token", {"api_key": created["api_key"]})
    clock.advance(120)
    for name, credential, params in [("auth.whoami", created["api_key"], None),
                                     ("auth.token", None, {"api_key": created["api_key"]})]:
        error = await refused(local, credential, name, params)
        assert isinstance(error, Unauthorized) and "expired" in error.message
    assert (await local.call(key, "auth.whoami"))["agent"]["handle"] == "admin"  # a key without expiry


async def test_a_refresh_token_works_until_it_expires_and_not_after(local: LocalHub, clock: ManualClock) -> None:
    key = (await local.hub.services.identity.bootstrap_admin("admin"))[2].api_key
    ttl = local.hub.settings.refresh_token_ttl
    early = await local.call(None, "auth.token", {"api_key": key})
    late = await local.call(None, "auth.token", {"api_key": key})
    clock.advance(ttl - 60)
    rotated = await local.call(None, "auth.refresh", {"refresh_token": early["refresh_token"]})
    clock.advance(120)
    error = await refused(local, None, "auth.refresh", {"refresh_token": late["refresh_token"]})
    assert isinstance(error, Unauthorized) and "expired" in error.message
    # The rotated token lives a full lifetime from its own refresh.
    await local.call(None, "auth.refresh", {"refresh_token": rotated["refresh_token"]})


async def test_an_invite_code_works_until_it_expires_and_not_after(local: LocalHub, clock: ManualClock) -> None:
    key = (await local.hub.services.identity.bootstrap_admin("admin"))[2].api_key
    invite = await local.call(key, "admin.invites.create", {"uses": 5, "expires_in_hours": 1})
    clock.advance(3600 - 60)
    await local.agent("early", invite_code=invite["invite_code"])
    clock.advance(120)
    with pytest.raises(Forbidden):
        await local.agent("late", invite_code=invite["invite_code"])


async def test_an_access_token_works_until_it_expires_and_not_after(local: LocalHub, clock: ManualClock) -> None:
    key = (await local.hub.services.identity.bootstrap_admin("admin"))[2].api_key
    grant = await local.call(None, "auth.token", {"api_key": key})
    clock.advance(grant["expires_in"] - 5)
    assert (await local.call(grant["access_token"], "auth.whoami"))["agent"]["handle"] == "admin"
    clock.advance(10)
    error = await refused(local, grant["access_token"], "auth.whoami")
    assert isinstance(error, Unauthorized) and "expired" in error.message


@sqlite_only
async def test_an_open_websocket_rechecks_its_token_at_expiry_and_the_client_refreshes_before(
    start_hub: ServerFactory,
) -> None:
    server = start_hub(access_token_ttl="2")
    async with HubClient(server) as hub:
        agent = await hub.register("short-lived")
        key = await hub.api_key(agent)
    async with await RpcSocket.open(server, token=agent.access_token) as socket, \
            ParleyClient(server.url, key, call_timeout=10) as client:
        assert (await socket.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id
        deadline = anyio.current_time() + 5  # two and a half token lifetimes
        while anyio.current_time() < deadline:
            assert (await client.call("auth.whoami")).agent.agent_id == agent.agent_id
            await anyio.sleep(0.2)
        assert client.refreshes >= 2
        with pytest.raises(RpcError) as expired:
            await socket.call("auth.whoami")  # the connection's token is two lifetimes old
        assert expired.value.code == "unauthorized"
