"""The operator, black-box over real sockets: listing agents, suspension, invites, registration policies."""

from typing import Any

import pytest

from hub.secrets import INVITE_KIND, issue

from .client import Agent, HubClient, RpcSocket, error_of, unique_handle
from .conftest import ServerFactory, diagonal

ADMIN_OPERATIONS: list[tuple[str, dict[str, Any]]] = [
    ("admin.agents.list", {}),
    ("admin.agents.suspend", {"agent": "someone"}),
    ("admin.agents.unsuspend", {"agent": "someone"}),
    ("admin.invites.create", {}),
]


async def _list_all(hub: HubClient, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every admin.agents.list page, walked with its cursors."""
    views: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = await hub.call("admin.agents.list", {**params, "limit": limit, **({"cursor": cursor} if cursor else {})},
                              token=hub.admin_key)
        assert len(page["items"]) <= limit
        views.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return views
    raise AssertionError("the cursor never ends")


async def _suspend(hub: HubClient, agent: Agent, reason: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = await hub.call("admin.agents.suspend", {"agent": agent.handle, "reason": reason},
                                          token=hub.admin_key)
    return view


async def _unsuspend(hub: HubClient, agent: Agent) -> dict[str, Any]:
    view: dict[str, Any] = await hub.call("admin.agents.unsuspend", {"agent": agent.agent_id}, token=hub.admin_key)
    return view


async def test_the_bootstrap_admin_key_is_an_admin_credential(hub: HubClient) -> None:
    me = await hub.call("auth.whoami", token=hub.admin_key)

    assert me["is_admin"] is True
    assert me["agent"]["agent_id"] == hub.server.admin["agent_id"]
    assert me["credential"]["kind"] == "api_key"
    assert "admin" in me["credential"]["scopes"]
    grant = await hub.call("auth.token", {"api_key": hub.admin_key})
    assert "admin" in grant["scopes"]
    assert (await hub.call("admin.agents.list", {"limit": 1}, token=grant["access_token"]))["items"]


@pytest.mark.parametrize(("method", "params"), ADMIN_OPERATIONS, ids=[name for name, _ in ADMIN_OPERATIONS])
async def test_a_normal_agent_is_forbidden_every_admin_operation(
    hub: HubClient, alice: Agent, method: str, params: dict[str, Any]
) -> None:
    api_key = await hub.api_key(alice)

    for credential in (alice.access_token, api_key):
        error = await error_of(hub.call(method, params, token=credential))
        assert error.code == "forbidden"
        assert error.details["required_scope"] == "admin"
    assert (await error_of(hub.call(method, params))).code == "unauthorized"


async def test_admin_lists_every_agent_a_page_at_a_time_in_id_order(hub: HubClient, alice: Agent, bob: Agent) -> None:
    views = await _list_all(hub, 7)

    ids = [view["profile"]["agent_id"] for view in views]
    assert ids == sorted(set(ids))
    by_id = {view["profile"]["agent_id"]: view for view in views}
    assert by_id[alice.agent_id]["profile"]["handle"] == alice.handle
    assert by_id[alice.agent_id]["is_admin"] is False
    assert by_id[bob.agent_id]["suspended_at"] is None
    assert by_id[hub.server.admin["agent_id"]]["is_admin"] is True
    assert ids == [view["profile"]["agent_id"] for view in await _list_all(hub, 200)]


async def test_admin_list_filters_suspended_and_active_agents(hub: HubClient, alice: Agent, bob: Agent) -> None:
    await _suspend(hub, alice, "spam")

    suspended = await _list_all(hub, 50, suspended=True)
    active = await _list_all(hub, 50, suspended=False)

    assert alice.agent_id in [view["profile"]["agent_id"] for view in suspended]
    assert all(view["suspended_at"] is not None for view in suspended)
    assert bob.agent_id in [view["profile"]["agent_id"] for view in active]
    assert alice.agent_id not in [view["profile"]["agent_id"] for view in active]
    assert all(view["suspended_at"] is None for view in active)
    everyone = {view["profile"]["agent_id"] for view in await _list_all(hub, 200)}
    assert everyone == {view["profile"]["agent_id"] for view in suspended + active}


async def test_admin_list_refuses_a_cursor_it_did_not_issue(hub: HubClient) -> None:
    for cursor in ("!!!!", "Tk9QRQ", "bm90LWFuLWlk"):
        error = await error_of(hub.call("admin.agents.list", {"cursor": cursor}, token=hub.admin_key))
        assert error.code == "invalid_request", cursor


async def test_suspending_voids_the_agents_credentials_at_once_over_http_and_websocket(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    api_key = await hub.api_key(alice)
    session = await hub.call("auth.token", {"api_key": api_key})
    async with await RpcSocket.open(hub.server, alice.access_token) as ws, \
            await RpcSocket.open(hub.server, api_key) as key_ws:
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == alice.agent_id
        assert (await key_ws.call("auth.whoami"))["agent"]["agent_id"] == alice.agent_id

        view = await _suspend(hub, alice, "sends spam")

        assert view["profile"]["agent_id"] == alice.agent_id
        assert view["suspended_at"] is not None
        assert view["suspended_reason"] == "sends spam"
        assert (await error_of(ws.call("auth.whoami"))).code == "unauthorized"
        assert (await error_of(key_ws.call("auth.whoami"))).code == "forbidden"
    for token in (alice.access_token, session["access_token"]):
        assert (await error_of(hub.call("auth.whoami", token=token))).code == "unauthorized"
    assert (await error_of(hub.call("auth.whoami", token=api_key))).code == "forbidden"
    assert (await error_of(hub.call("auth.token", {"api_key": api_key}))).code == "forbidden"
    for refresh_token in (alice.refresh_token, session["refresh_token"]):
        assert (await error_of(hub.call("auth.refresh", {"refresh_token": refresh_token}))).code == "unauthorized"
    # the rest of the hub goes on; the suspended agent drops out of discovery
    assert (await hub.call("auth.whoami", token=bob.access_token))["agent"]["agent_id"] == bob.agent_id
    found = await hub.call("agents.search", {"q": alice.handle}, token=bob.access_token)
    assert found["items"] == []


async def test_unsuspending_lets_the_agent_get_fresh_tokens_but_old_ones_stay_void(
    hub: HubClient, alice: Agent
) -> None:
    api_key = await hub.api_key(alice)
    await _suspend(hub, alice)

    view = await _unsuspend(hub, alice)

    assert view["suspended_at"] is None and view["suspended_reason"] is None
    assert (await error_of(hub.call("auth.whoami", token=alice.access_token))).code == "unauthorized"
    refresh = await error_of(hub.call("auth.refresh", {"refresh_token": alice.refresh_token}))
    assert refresh.code == "unauthorized"
    grant = await hub.call("auth.token", {"api_key": api_key})
    assert (await hub.call("auth.whoami", token=grant["access_token"]))["agent"]["agent_id"] == alice.agent_id
    assert (await hub.call("auth.refresh", {"refresh_token": grant["refresh_token"]}))["access_token"]
    assert (await hub.call("auth.whoami", token=api_key))["agent"]["agent_id"] == alice.agent_id


async def test_a_suspended_agent_cannot_recover_its_way_back_in(hub: HubClient, alice: Agent) -> None:
    await _suspend(hub, alice)

    error = await error_of(hub.call("auth.recover", {"agent": alice.handle, "recovery_key": alice.recovery_key}))

    assert error.code == "forbidden"
    await _unsuspend(hub, alice)
    recovered = await hub.call("auth.recover", {"agent": alice.handle, "recovery_key": alice.recovery_key})
    assert recovered["agent_id"] == alice.agent_id


async def test_suspending_an_unknown_agent_is_not_found_and_the_admin_itself_is_invalid(hub: HubClient) -> None:
    for method in ("admin.agents.suspend", "admin.agents.unsuspend"):
        unknown = await error_of(hub.call(method, {"agent": unique_handle("ghost")}, token=hub.admin_key))
        assert unknown.code == "not_found"
        itself = await error_of(hub.call(method, {"agent": hub.server.admin["agent_id"]}, token=hub.admin_key))
        assert itself.code == "invalid_request"
    assert (await hub.call("auth.whoami", token=hub.admin_key))["is_admin"] is True


async def test_admin_creates_invites_with_uses_and_expiry(hub: HubClient) -> None:
    invite = await hub.call("admin.invites.create", {"uses": 3, "expires_in_hours": 2}, token=hub.admin_key)

    assert invite["invite_code"].startswith("pri_")
    assert invite["invite_id"].startswith("inv_")
    assert invite["uses"] == 3
    for params in ({"uses": 0}, {"uses": 1001}, {"expires_in_hours": 0}, {"code": "mine"}):
        error = await error_of(hub.call("admin.invites.create", params, token=hub.admin_key))
        assert error.code == "invalid_request", params


# -- registration policies ------------------------------------------------------------------------


@diagonal  # its own hub, for a rule neither the loop nor the store decides
async def test_invite_registration_needs_a_valid_unspent_invite(start_hub: ServerFactory) -> None:
    async with HubClient(start_hub(registration="invite")) as hub:
        once = (await hub.call("admin.invites.create", {"uses": 1}, token=hub.admin_key))["invite_code"]
        forged, _ = issue(INVITE_KIND, "inv_" + once.split("_")[1])

        for invite in (None, "pri_nonsense", once[:-1] + ("A" if once[-1] != "A" else "B"), forged):
            params = {"handle": unique_handle("hopeful"), **({"invite_code": invite} if invite else {})}
            error = await error_of(hub.call("auth.register", params))
            assert error.code == "forbidden", invite
            assert error.details.get("field") == "invite_code"

        # a registration that fails for another reason does not spend the invite
        taken = await hub.call("auth.register", {"handle": unique_handle("admin-made")}, token=hub.admin_key)
        conflict = await error_of(hub.call("auth.register", {"handle": taken["handle"], "invite_code": once}))
        assert conflict.code == "conflict"

        invited = await hub.call("auth.register", {"handle": unique_handle("invited"), "invite_code": once})
        assert (await hub.call("auth.whoami", token=invited["tokens"]["access_token"]))["agent"]["handle"] == \
            invited["handle"]
        spent = await error_of(hub.call("auth.register", {"handle": unique_handle("late"), "invite_code": once}))
        assert spent.code == "forbidden"

        twice = (await hub.call("admin.invites.create", {"uses": 2}, token=hub.admin_key))["invite_code"]
        for _ in range(2):
            pair = await hub.call("auth.register", {"handle": unique_handle("pair"), "invite_code": twice})
            assert pair["agent_id"].startswith("agt_")
        assert (await error_of(hub.call("auth.register", {"handle": unique_handle("third"),
                                                          "invite_code": twice}))).code == "forbidden"


@diagonal  # its own hub, for a rule neither the loop nor the store decides
async def test_closed_registration_is_forbidden_except_to_the_admin(start_hub: ServerFactory) -> None:
    async with HubClient(start_hub(registration="closed")) as hub:
        handle = unique_handle("closed")
        refused = await error_of(hub.call("auth.register", {"handle": handle}))
        assert refused.code == "forbidden"
        member = await hub.call("auth.register", {"handle": unique_handle("member")}, token=hub.admin_key)
        by_member = await error_of(hub.call("auth.register", {"handle": handle},
                                            token=member["tokens"]["access_token"]))
        assert by_member.code == "forbidden"
        invite = (await hub.call("admin.invites.create", {}, token=hub.admin_key))["invite_code"]
        with_invite = await error_of(hub.call("auth.register", {"handle": handle, "invite_code": invite}))
        assert with_invite.code == "forbidden"

        created = await hub.call("auth.register", {"handle": handle, "display_name": "Made by ops"},
                                 token=hub.admin_key)

        assert created["handle"] == handle
        me = await hub.call("auth.whoami", token=created["tokens"]["access_token"])
        assert me["agent"]["agent_id"] == created["agent_id"]
        assert me["is_admin"] is False
        assert "admin" not in created["tokens"]["scopes"]
        admin_session = (await hub.call("auth.token", {"api_key": hub.admin_key}))["access_token"]
        assert (await hub.call("auth.register", {"handle": unique_handle("viatoken")},
                               token=admin_session))["agent_id"]
