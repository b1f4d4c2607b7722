"""API keys, black-box over real sockets: create (shown once), list, scopes, revoke, limits."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.secrets import API_KEY_KIND, issue
from protocol.errors import Unauthorized

from .client import AGENT_SCOPES, Agent, HubClient, RpcSocket, error_of
from .conftest import ServerFactory
from .inprocess import ManualClock, local_hub


async def _create(hub: HubClient, token: str, **params: Any) -> dict[str, Any]:
    created: dict[str, Any] = await hub.call("keys.create", {"name": "k", **params}, token=token)
    return created


async def _keys(hub: HubClient, token: str) -> dict[str, dict[str, Any]]:
    return {key["key_id"]: key for key in (await hub.call("keys.list", token=token))["items"]}


async def test_a_created_key_is_shown_once_and_listing_never_reveals_it(hub: HubClient, alice: Agent) -> None:
    before = datetime.now(UTC)

    created = await _create(hub, alice.access_token, name="ci runner", scopes=["agents:read"], expires_in_days=7)

    api_key, info = created["api_key"], created["key"]
    assert api_key.startswith("prl_")
    assert info["key_id"].startswith("key_")
    assert info["name"] == "ci runner"
    assert info["prefix"] == api_key[:12]
    assert info["scopes"] == ["agents:read"]
    assert info["last_used_at"] is None and info["revoked_at"] is None
    expires_at = datetime.fromisoformat(info["expires_at"])
    assert before + timedelta(days=7) - timedelta(minutes=1) < expires_at < before + timedelta(days=7, minutes=1)
    listing = await hub.call("keys.list", token=alice.access_token)
    assert [key["key_id"] for key in listing["items"]] == [info["key_id"]]
    assert listing["items"][0] == info
    secret = api_key.split("_")[2]
    assert secret not in json.dumps(listing) and secret[:20] not in json.dumps(listing)
    assert (await hub.call("auth.whoami", token=api_key))["credential"]["key_id"] == info["key_id"]


async def test_keys_list_shows_only_the_callers_own_keys_and_records_last_use(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    mine = await _create(hub, alice.access_token, name="mine")
    theirs = await _create(hub, bob.access_token, name="theirs")

    await hub.call("auth.whoami", token=mine["api_key"])

    alice_keys = await _keys(hub, alice.access_token)
    assert list(alice_keys) == [mine["key"]["key_id"]]
    assert alice_keys[mine["key"]["key_id"]]["last_used_at"] is not None
    assert list(await _keys(hub, bob.access_token)) == [theirs["key"]["key_id"]]


async def test_a_keys_scopes_default_to_those_of_the_calling_credential(hub: HubClient, alice: Agent) -> None:
    full = await _create(hub, alice.access_token)
    narrow = await _create(hub, alice.access_token, scopes=["keys:manage", "agents:read"])

    inherited = await _create(hub, narrow["api_key"])

    assert full["key"]["scopes"] == AGENT_SCOPES
    assert narrow["key"]["scopes"] == ["agents:read", "keys:manage"]
    assert inherited["key"]["scopes"] == ["agents:read", "keys:manage"]


async def test_a_read_only_key_is_forbidden_to_manage_keys_or_edit_the_profile(hub: HubClient, alice: Agent) -> None:
    read_only = (await _create(hub, alice.access_token, scopes=["agents:read"]))["api_key"]
    session = (await hub.call("auth.token", {"api_key": read_only}))["access_token"]

    for credential in (read_only, session):
        for method, params in [("keys.create", {"name": "escalate"}), ("keys.list", {}),
                               ("agents.update_profile", {"display_name": "pwned"})]:
            error = await error_of(hub.call(method, params, token=credential))
            assert error.code == "forbidden", (method, credential)
            assert error.jsonrpc_code == -32003
        assert (await hub.call("agents.get", {"agent": alice.handle}, token=credential))["agent_id"] == alice.agent_id
    profile = await hub.call("agents.get", {"agent": alice.agent_id}, token=alice.access_token)
    assert profile["display_name"] is None
    assert len(await _keys(hub, alice.access_token)) == 1


async def test_a_key_cannot_be_given_scopes_its_creator_lacks(hub: HubClient, alice: Agent) -> None:
    narrow = (await _create(hub, alice.access_token, scopes=["keys:manage", "agents:read"]))["api_key"]

    wider = await error_of(hub.call("keys.create", {"name": "wider", "scopes": ["agents:read", "messages:write"]},
                                    token=narrow))
    admin = await error_of(hub.call("keys.create", {"name": "admin", "scopes": ["admin"]}, token=alice.access_token))

    assert wider.code == "forbidden"
    assert wider.details["missing"] == ["messages:write"]
    assert admin.code == "forbidden"
    assert admin.details["missing"] == ["admin"]
    assert len(await _keys(hub, alice.access_token)) == 1


@pytest.mark.parametrize(
    "params",
    [{"name": ""}, {"name": "x" * 65}, {}, {"name": "k", "scopes": []}, {"name": "k", "scopes": ["root"]},
     {"name": "k", "expires_in_days": 0}, {"name": "k", "expires_in_days": 3651}, {"name": "k", "owner": "bob"}],
    ids=["empty-name", "long-name", "no-name", "no-scopes", "unknown-scope", "zero-days", "too-many-days",
         "unknown-field"],
)
async def test_keys_create_refuses_invalid_params(hub: HubClient, alice: Agent, params: dict[str, Any]) -> None:
    error = await error_of(hub.call("keys.create", params, token=alice.access_token))

    assert error.code == "invalid_request"
    assert error.details["errors"]
    assert await _keys(hub, alice.access_token) == {}


async def test_revoking_a_key_takes_effect_at_once_with_every_session_opened_from_it(
    hub: HubClient, alice: Agent
) -> None:
    doomed = await _create(hub, alice.access_token, name="doomed")
    kept = await _create(hub, alice.access_token, name="kept")
    session = await hub.call("auth.token", {"api_key": doomed["api_key"]})
    rotated = await hub.call("auth.refresh", {"refresh_token": session["refresh_token"]})
    async with await RpcSocket.open(hub.server, rotated["access_token"]) as ws:
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == alice.agent_id

        revoked = await hub.call("keys.revoke", {"key_id": doomed["key"]["key_id"]}, token=alice.access_token)

        assert revoked["key_id"] == doomed["key"]["key_id"]
        assert revoked["revoked_at"] is not None
        assert (await error_of(ws.call("auth.whoami"))).code == "unauthorized"
    for token in (doomed["api_key"], rotated["access_token"]):
        assert (await error_of(hub.call("auth.whoami", token=token))).code == "unauthorized"
    assert (await error_of(hub.call("auth.token", {"api_key": doomed["api_key"]}))).code == "unauthorized"
    refresh = await error_of(hub.call("auth.refresh", {"refresh_token": rotated["refresh_token"]}))
    assert refresh.code == "unauthorized"
    listed = await _keys(hub, alice.access_token)
    assert listed[doomed["key"]["key_id"]]["revoked_at"] == revoked["revoked_at"]
    assert listed[kept["key"]["key_id"]]["revoked_at"] is None
    assert (await hub.call("auth.whoami", token=kept["api_key"]))["agent"]["agent_id"] == alice.agent_id
    assert (await hub.call("auth.whoami", token=alice.access_token))["agent"]["agent_id"] == alice.agent_id


async def test_revoking_a_key_again_changes_nothing(hub: HubClient, alice: Agent) -> None:
    key_id = (await _create(hub, alice.access_token))["key"]["key_id"]
    first = await hub.call("keys.revoke", {"key_id": key_id}, token=alice.access_token)

    second = await hub.call("keys.revoke", {"key_id": key_id}, token=alice.access_token)

    assert second == first


async def test_revoking_another_agents_key_or_an_unknown_key_is_not_found(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    bobs = await _create(hub, bob.access_token)

    for key_id in (bobs["key"]["key_id"], "key_00000000000000000000000000", "nonsense"):
        error = await error_of(hub.call("keys.revoke", {"key_id": key_id}, token=alice.access_token))
        assert error.code == "not_found", key_id
    assert (await hub.call("auth.whoami", token=bobs["api_key"]))["agent"]["agent_id"] == bob.agent_id
    assert (await _keys(hub, bob.access_token))[bobs["key"]["key_id"]]["revoked_at"] is None


async def test_the_live_key_limit_is_a_conflict_until_a_key_is_revoked(start_hub: ServerFactory) -> None:
    async with HubClient(start_hub(max_api_keys="2")) as hub:
        agent = await hub.register("limited")
        first = await _create(hub, agent.access_token, name="one")
        await _create(hub, agent.access_token, name="two")

        error = await error_of(hub.call("keys.create", {"name": "three"}, token=agent.access_token))

        assert error.code == "conflict"
        assert error.details["limit"] == 2
        assert len(await _keys(hub, agent.access_token)) == 2
        await hub.call("keys.revoke", {"key_id": first["key"]["key_id"]}, token=agent.access_token)
        assert (await _create(hub, agent.access_token, name="three"))["api_key"].startswith("prl_")
        # another agent has a limit of its own
        other = await hub.register("other")
        assert (await _create(hub, other.access_token))["api_key"].startswith("prl_")


# -- a key in use: the hub keeps it (by key id, with the stored hash only), and forgets it at once --------


async def _whoami(hub: HubClient, credential: str) -> str:
    agent_id: str = (await hub.call("auth.whoami", token=credential))["agent"]["agent_id"]
    return agent_id


async def test_a_key_in_use_is_refused_on_the_very_next_request_after_its_revocation(
    hub: HubClient, alice: Agent
) -> None:
    doomed = await _create(hub, alice.access_token, name="doomed")
    kept = await _create(hub, alice.access_token, name="kept")
    for _ in range(2):  # used, so the hub holds both keys
        assert await _whoami(hub, doomed["api_key"]) == alice.agent_id
        assert await _whoami(hub, kept["api_key"]) == alice.agent_id

    await hub.call("keys.revoke", {"key_id": doomed["key"]["key_id"]}, token=alice.access_token)

    refused = await error_of(hub.call("auth.whoami", token=doomed["api_key"]))
    assert refused.code == "unauthorized" and "revoked" in refused.error["message"]
    assert (await error_of(hub.call("auth.token", {"api_key": doomed["api_key"]}))).code == "unauthorized"
    assert await _whoami(hub, kept["api_key"]) == alice.agent_id


async def test_a_key_in_use_is_refused_on_the_very_next_request_after_recovery_or_suspension(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    alices, bobs = await hub.api_key(alice), await hub.api_key(bob)
    assert await _whoami(hub, alices) == alice.agent_id
    assert await _whoami(hub, bobs) == bob.agent_id

    recovered = await hub.call("auth.recover", {"agent": alice.handle, "recovery_key": alice.recovery_key})
    await hub.call("admin.agents.suspend", {"agent": bob.handle}, token=hub.admin_key)

    assert (await error_of(hub.call("auth.whoami", token=alices))).code == "unauthorized"
    assert (await error_of(hub.call("auth.whoami", token=bobs))).code == "forbidden"
    assert await _whoami(hub, recovered["api_key"]["api_key"]) == alice.agent_id
    await hub.call("admin.agents.unsuspend", {"agent": bob.handle}, token=hub.admin_key)
    assert await _whoami(hub, bobs) == bob.agent_id  # suspension ends sessions, not keys


@pytest.mark.anyio
async def test_a_key_in_use_is_refused_with_another_secret_and_after_it_expires(
    tmp_path: Path, store_kind: str
) -> None:
    clock = ManualClock()
    async with local_hub(tmp_path, store_kind, clock) as local:
        agent = await local.agent("expiring")
        key, key_id = await local.api_key(agent, expires_in_days=1)
        assert (await local.call(key, "auth.whoami"))["agent"]["agent_id"] == agent.agent_id
        forged, _ = issue(API_KEY_KIND, key_id)  # the same key id, a well-formed secret of someone's guess
        with pytest.raises(Unauthorized, match="not valid"):
            await local.call(forged, "auth.whoami")
        clock.advance(24 * 3600 + 1)
        with pytest.raises(Unauthorized, match="expired"):
            await local.call(key, "auth.whoami")


@pytest.mark.anyio
async def test_a_key_in_use_records_its_last_use_at_most_a_minute_late(tmp_path: Path, store_kind: str) -> None:
    clock = ManualClock()
    async with local_hub(tmp_path, store_kind, clock) as local:
        agent = await local.agent("busy")
        key, key_id = await local.api_key(agent)

        async def last_used() -> datetime:
            listed = await local.as_agent(agent, "keys.list", {})
            return datetime.fromisoformat(next(k for k in listed["items"] if k["key_id"] == key_id)["last_used_at"])

        await local.call(key, "auth.whoami")
        first = await last_used()
        clock.advance(30)
        await local.call(key, "auth.whoami")
        assert await last_used() == first  # within the resolution: no write
        clock.advance(31)
        await local.call(key, "auth.whoami")
        assert await last_used() > first + timedelta(seconds=60)
        clock.advance(61)
        await local.call(None, "auth.token", {"api_key": key})
        exchanged = await last_used()
        assert exchanged > first + timedelta(seconds=121)
        await local.call(key, "auth.whoami")
        assert await last_used() == exchanged  # the exchange counted as a use
