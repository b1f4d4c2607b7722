"""Usage, limits and analytics against real hubs: what is counted, when it reaches the store, the caller's
view with percents, the operator's views (sorted, paged, admin only), per-agent limits, and daily quotas
that refuse a send or a run and write nothing."""

import base64
import os
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from .client import Agent, HubClient, error_of
from .conftest import ServerFactory, diagonal, postgres_only
from .mcp_support import SDK_CLIENT_TRIO_GET_STREAM, call, call_error, http_client
from .messaging import WAIT
from .servers import HubServer, drop_postgres_database, redis_unavailable, start_nodes

pytestmark = pytest.mark.anyio

GIB = 2**30


def today() -> date:
    return datetime.now(UTC).date()


def next_midnight() -> str:
    return datetime.combine(today() + timedelta(days=1), time(), UTC).isoformat().replace("+00:00", "Z")


async def usage(hub: HubClient, agent: Agent, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = await hub.call("usage.get", params, token=agent.access_token)
    return result


async def send(hub: HubClient, agent: Agent, to: Agent, body: str, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = await hub.call("messages.send", {"to": to.handle, "body": body, **params},
                                             token=agent.access_token)
    return message


async def stored_counts(server: HubServer, agent_id: str) -> dict[str, int]:
    """The agent's counters for today as the store has them (no flush asked for)."""
    url = server.database_url or f"sqlite:///{server.sqlite_path}"

    def read() -> dict[str, int]:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT counter, value FROM usage_daily WHERE agent_id = :agent AND "
                                            "day = :day"), {"agent": agent_id, "day": today().isoformat()})
                return {counter: int(value) for counter, value in rows}
        finally:
            engine.dispose()

    return await anyio.to_thread.run_sync(read)


async def limit(hub: HubClient, agent: Agent, **limits: int) -> dict[str, Any]:
    result: dict[str, Any] = await hub.call("admin.set_limits", {"agent": agent.handle, **limits},
                                            token=hub.admin_key)
    return result


# -- counting -----------------------------------------------------------------------------------------


async def test_usage_counts_requests_messages_errors_and_what_is_kept(hub: HubClient, alice: Agent, bob: Agent
                                                                      ) -> None:
    await send(hub, alice, bob, "hello", client_msg_id="one")
    await send(hub, alice, bob, "hello", client_msg_id="one")  # a retry: no second message
    await send(hub, alice, bob, "how are you?")
    await error_of(hub.call("messages.get", {"message_id": "msg_nope"}, token=alice.access_token))

    mine = await usage(hub, alice)

    assert mine["agent_id"] == alice.agent_id
    assert mine["from_day"] == mine["to_day"] == today().isoformat()
    [day] = mine["days"]
    assert day == {"day": today().isoformat(), "requests": {"write": 3, "read": 2}, "messages_sent": 2,
                   "tool_calls": 0, "executions_started": 0, "errors": {"not_found": 1}}
    assert mine["total"] == day
    assert mine["storage"]["messages"] == {"items": 2, "bytes": len("hello") + len("how are you?")}
    assert mine["storage"]["files"] == {"items": 0, "bytes": 0}
    assert mine["limits"]["messages_per_day"] == {"limit": None, "used": 2, "percent": None,
                                                  "resets_at": next_midnight()}
    assert mine["limits"]["storage_mb"] == {"limit": GIB, "used": 0, "percent": 0.0, "resets_at": None}
    theirs = await usage(hub, bob)
    assert theirs["days"][0]["messages_sent"] == 0
    assert theirs["storage"]["messages"] == {"items": 0, "bytes": 0}


async def test_what_messages_keep_follows_edits_and_deletes(hub: HubClient, alice: Agent, bob: Agent) -> None:
    short = await send(hub, alice, bob, "short")
    gone = await send(hub, alice, bob, "to be deleted")
    await hub.call("messages.edit", {"message_id": short["message_id"], "body": "not so short"},
                   token=alice.access_token)
    await hub.call("messages.delete", {"message_id": gone["message_id"]}, token=alice.access_token)
    await hub.call("messages.delete", {"message_id": gone["message_id"]}, token=alice.access_token)  # a no-op

    assert (await usage(hub, alice))["storage"]["messages"] == {"items": 1, "bytes": len("not so short")}


async def test_usage_is_served_over_rest_too(hub: HubClient, alice: Agent) -> None:
    response = await hub.http.get("/api/usage", params={"from_day": (today() - timedelta(days=1)).isoformat()},
                                  headers={"authorization": f"Bearer {alice.access_token}"})

    assert response.status_code == 200, response.text
    assert [day["day"] for day in response.json()["days"]] == [(today() - timedelta(days=1)).isoformat(),
                                                                today().isoformat()]


async def test_a_range_of_days_lists_every_day_and_adds_them_up(hub: HubClient, alice: Agent, bob: Agent) -> None:
    await send(hub, alice, bob, "one")

    mine = await usage(hub, alice, from_day=(today() - timedelta(days=2)).isoformat(), to_day=today().isoformat())

    assert [day["day"] for day in mine["days"]] == [(today() - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    assert [day["messages_sent"] for day in mine["days"]] == [0, 0, 1]
    assert mine["total"]["messages_sent"] == 1
    yesterday = await usage(hub, alice, to_day=(today() - timedelta(days=1)).isoformat())
    assert [day["messages_sent"] for day in yesterday["days"]] == [0]
    assert yesterday["total"]["requests"] == {}


@pytest.mark.parametrize(("params", "field"), [
    ({"from_day": (today() + timedelta(days=1)).isoformat()}, "from_day"),
    ({"to_day": (today() + timedelta(days=1)).isoformat()}, "to_day"),
    ({"from_day": (today() - timedelta(days=90)).isoformat()}, "from_day"),
    ({"from_day": "yesterday"}, "from_day"),
    ({"agent": "someone-else"}, "agent"),
], ids=["from-after-to", "to-in-the-future", "over-90-days", "not-a-date", "another-agent"])
async def test_a_bad_range_is_refused_and_names_its_field(hub: HubClient, alice: Agent, params: dict[str, Any],
                                                          field: str) -> None:
    error = await error_of(hub.call("usage.get", params, token=alice.access_token))

    assert error.code == "invalid_request"
    assert field in str(error.details)


async def test_ninety_days_is_the_longest_range(hub: HubClient, alice: Agent) -> None:
    mine = await usage(hub, alice, from_day=(today() - timedelta(days=89)).isoformat())

    assert len(mine["days"]) == 90


@diagonal  # its own hubs: each loop and each store once
async def test_counts_reach_the_store_every_flush_and_at_shutdown(start_hub: ServerFactory) -> None:
    periodic = start_hub(usage_flush_seconds="0.2")
    async with HubClient(periodic) as hub:
        alice, bob = await hub.register("alice"), await hub.register("bob")
        await send(hub, alice, bob, "flushed by the timer")
        with anyio.fail_after(WAIT):
            while (await stored_counts(periodic, alice.agent_id)).get("messages_sent") != 1:
                await anyio.sleep(0.05)

    rare = start_hub(usage_flush_seconds="3600")
    async with HubClient(rare) as hub:
        alice, bob = await hub.register("alice"), await hub.register("bob")
        await send(hub, alice, bob, "one")
        await send(hub, alice, bob, "two")
        assert await stored_counts(rare, alice.agent_id) == {}  # counted in memory only, so far

        assert rare.stop() == 0
        assert await stored_counts(rare, alice.agent_id) == {"messages_sent": 2, "requests.write": 2}
        await anyio.to_thread.run_sync(rare.launch)
        assert (await usage(hub, alice))["days"][0]["messages_sent"] == 2


@SDK_CLIENT_TRIO_GET_STREAM
async def test_mcp_tool_calls_are_counted_with_the_operations_they_make(hub: HubClient, alice: Agent, bob: Agent
                                                                       ) -> None:
    async with http_client(hub.server, alice.access_token, "auto") as client:
        await call(client, "whoami")
        await call(client, "send_message", to=bob.handle, text="over mcp")
        assert await call_error(client, "read_messages", conversation="cnv_missing") == "not_found"

    day = (await usage(hub, alice))["days"][0]

    assert day["tool_calls"] == 3
    assert day["messages_sent"] == 1
    assert day["errors"] == {"not_found": 1}


@postgres_only
async def test_two_nodes_sum_up_after_a_flush_and_share_a_daily_limit(tmp_path: Path, anyio_backend: str,
                                                                      store_kind: str) -> None:
    if (reason := redis_unavailable()) is not None:
        pytest.skip(f"several-node test skipped: {reason}")
    nodes = start_nodes(anyio_backend, tmp_path, 2, usage_flush_seconds="0.3",
                        redis_url=os.environ["PARLEY_TEST_REDIS_URL"], redis_channel=f"usage-{uuid.uuid4().hex[:12]}")
    try:
        async with HubClient(nodes[0]) as hub_a, HubClient(nodes[1]) as hub_b:
            alice, bob = await hub_a.register("alice"), await hub_a.register("bob")
            await limit(hub_a, alice, messages_per_day=3)
            await send(hub_a, alice, bob, "one")
            await send(hub_a, alice, bob, "two")
            await send(hub_b, alice, bob, "three")
            with anyio.fail_after(WAIT):  # node B's share arrives with its next flush
                while (await usage(hub_a, alice))["days"][0]["messages_sent"] != 3:
                    await anyio.sleep(0.1)
            await anyio.sleep(0.7)  # past node B's flush interval: its next check reads the stored total

            for hub in (hub_b, hub_a):
                error = await error_of(send(hub, alice, bob, "four"))
                assert (error.code, error.details["used"]) == ("quota_exceeded", 3)
            assert (await usage(hub_b, alice))["days"][0]["messages_sent"] == 3
    finally:
        codes = [node.stop() for node in nodes]
        drop_postgres_database(nodes[0].database_url)
    assert codes == [0, 0]


# -- limits -------------------------------------------------------------------------------------------


async def test_the_operator_sets_and_clears_an_agents_limits(hub: HubClient, alice: Agent) -> None:
    first = await limit(hub, alice, messages_per_day=2, executions_per_day=1)
    assert first["agent_id"] == alice.agent_id
    assert first["overrides"] == {"messages_per_day": 2, "executions_per_day": 1}
    assert first["effective"] == {"messages_per_day": 2, "executions_per_day": 1, "storage_mb": 1024,
                                  "memory_mb": 64}

    merged = await limit(hub, alice, storage_mb=1, messages_per_day=5)
    assert merged["overrides"] == {"messages_per_day": 5, "executions_per_day": 1, "storage_mb": 1}
    assert (await usage(hub, alice))["limits"]["storage_mb"]["limit"] == 2**20

    cleared = await hub.call("admin.clear_limits", {"agent": alice.agent_id, "names": ["messages_per_day"]},
                             token=hub.admin_key)
    assert cleared["overrides"] == {"executions_per_day": 1, "storage_mb": 1}
    everything = await hub.call("admin.clear_limits", {"agent": alice.handle}, token=hub.admin_key)
    assert everything["overrides"] == {}
    assert everything["effective"] == {"messages_per_day": None, "executions_per_day": None, "storage_mb": 1024,
                                       "memory_mb": 64}


@pytest.mark.parametrize(("params", "code"), [
    ({}, "invalid_request"),
    ({"messages_per_day": -1}, "invalid_request"),
    ({"storage_mb": 0}, "invalid_request"),
    ({"messages_per_day": "ten"}, "invalid_request"),
], ids=["nothing-to-set", "negative", "no-storage", "not-a-number"])
async def test_bad_limits_are_refused(hub: HubClient, alice: Agent, params: dict[str, Any], code: str) -> None:
    error = await error_of(limit(hub, alice, **params))

    assert error.code == code
    assert (await hub.call("admin.clear_limits", {"agent": alice.handle}, token=hub.admin_key))["overrides"] == {}


async def test_limits_of_an_unknown_agent_are_not_found(hub: HubClient) -> None:
    error = await error_of(hub.call("admin.set_limits", {"agent": "nobody-usage-zz", "messages_per_day": 1},
                                    token=hub.admin_key))

    assert error.code == "not_found"


async def test_a_storage_limit_refuses_an_upload_over_it(hub: HubClient, alice: Agent) -> None:
    await limit(hub, alice, storage_mb=1)
    size = 400 * 1024 // 3 * 4  # base64 characters of 400 KiB
    for letter in "AB":
        await hub.call("files.upload", {"name": f"{letter}.bin", "content_base64": letter * size},
                       token=alice.access_token)

    error = await error_of(hub.call("files.upload", {"name": "C.bin", "content_base64": "C" * size},
                                    token=alice.access_token))

    assert error.code == "quota_exceeded"
    assert error.details["limit"] == 2**20
    files = (await hub.call("files.list", {}, token=alice.access_token))["items"]
    assert sorted(file["name"] for file in files) == ["A.bin", "B.bin"]


# -- daily quotas -------------------------------------------------------------------------------------


async def test_over_the_daily_message_limit_a_send_is_refused_and_writes_nothing(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    await limit(hub, alice, messages_per_day=2)
    first = await send(hub, alice, bob, "one", client_msg_id="first")
    await send(hub, alice, bob, "two")
    percent = (await usage(hub, alice))["limits"]["messages_per_day"]
    assert percent == {"limit": 2, "used": 2, "percent": 100.0, "resets_at": next_midnight()}

    error = await error_of(send(hub, alice, bob, "three"))

    assert error.code == "quota_exceeded"
    assert error.jsonrpc_code == -32030
    assert error.details == {"quota": "messages_per_day", "limit": 2, "used": 2, "resets_at": next_midnight()}
    listed = await hub.call("messages.list", {"conversation_id": first["conversation_id"]}, token=bob.access_token)
    assert [m["body"] for m in listed["items"] if m["kind"] == "message"] == ["one", "two"]
    assert (await send(hub, alice, bob, "one", client_msg_id="first"))["message_id"] == first["message_id"]
    assert (await usage(hub, alice))["days"][0]["messages_sent"] == 2
    await hub.call("messages.send", {"to": alice.handle, "body": "bob has no limit"}, token=bob.access_token)


async def test_over_the_daily_limit_rest_answers_403_with_retry_after(hub: HubClient, alice: Agent, bob: Agent
                                                                      ) -> None:
    await limit(hub, alice, messages_per_day=1)
    first = await send(hub, alice, bob, "one")

    response = await hub.http.post(f"/api/conversations/{first['conversation_id']}/messages", json={"body": "two"},
                                   headers={"authorization": f"Bearer {alice.access_token}"})

    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "quota_exceeded"
    seconds = (datetime.fromisoformat(next_midnight()) - datetime.now(UTC)).total_seconds()
    assert abs(int(response.headers["retry-after"]) - seconds) <= 5


async def test_lifting_a_limit_lets_the_agent_send_again(hub: HubClient, alice: Agent, bob: Agent) -> None:
    await limit(hub, alice, messages_per_day=1)
    await send(hub, alice, bob, "one")
    assert (await error_of(send(hub, alice, bob, "two"))).code == "quota_exceeded"

    await limit(hub, alice, messages_per_day=0)  # 0: no limit

    assert (await send(hub, alice, bob, "two"))["body"] == "two"


async def test_over_the_daily_run_limit_a_run_is_refused_and_starts_nothing(hub: HubClient, alice: Agent) -> None:
    await limit(hub, alice, executions_per_day=1)
    workflow = await hub.call("workflows.create", {"name": "once", "nodes": [
        {"id": "one", "type": "transform", "value": "{{ 1 }}"}]}, token=alice.access_token)
    run = {"workflow_id": workflow["workflow_id"], "idempotency_key": "first"}
    first = await hub.call("workflows.run", run, token=alice.access_token)

    error = await error_of(hub.call("workflows.run", {"workflow_id": workflow["workflow_id"]},
                                    token=alice.access_token))

    assert error.code == "quota_exceeded"
    assert error.details == {"quota": "executions_per_day", "limit": 1, "used": 1, "resets_at": next_midnight()}
    runs = await hub.call("executions.list", {"workflow_id": workflow["workflow_id"]}, token=alice.access_token)
    assert [execution["execution_id"] for execution in runs["items"]] == [first["execution_id"]]
    assert (await hub.call("workflows.run", run, token=alice.access_token)) == first  # a retry is no new run
    # A trigger (POST /api/trigger/{id}) is a run like any other.
    triggered = await error_of(hub.call("workflows.trigger", {"workflow_id": workflow["workflow_id"]},
                                        token=alice.access_token))
    assert triggered.code == "quota_exceeded"
    mine = await usage(hub, alice)
    assert mine["days"][0]["executions_started"] == 1
    assert mine["limits"]["executions_per_day"]["percent"] == 100.0


# -- the operator's views -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["admin.usage", "admin.analytics", "admin.set_limits", "admin.clear_limits"])
async def test_only_the_operator_sees_everyones_usage(hub: HubClient, alice: Agent, bob: Agent, method: str
                                                      ) -> None:
    params = {"agent": bob.handle, "messages_per_day": 1} if method == "admin.set_limits" else (
        {"agent": bob.handle} if method == "admin.clear_limits" else {})

    error = await error_of(hub.call(method, params, token=alice.access_token))

    assert error.code == "forbidden"
    assert error.details == {"required_scope": "admin"}
    assert (await usage(hub, bob))["limits"]["messages_per_day"]["limit"] is None


@diagonal  # its own hubs: each loop and each store once
async def test_the_operator_sees_agents_by_usage_a_page_at_a_time_and_the_hub_per_day(
    start_hub: ServerFactory
) -> None:
    server = start_hub()
    async with HubClient(server) as hub:
        quiet, busy, middle = (await hub.register("quiet"), await hub.register("busy"), await hub.register("middle"))
        for sender, count in ((quiet, 1), (busy, 3), (middle, 2)):
            for n in range(count):
                await send(hub, sender, quiet if sender is not quiet else busy, f"message {n}")
        workflow = await hub.call("workflows.create", {"name": "w", "nodes": [
            {"id": "one", "type": "transform", "value": "{{ 1 }}"}]}, token=middle.access_token)
        await hub.call("workflows.run", {"workflow_id": workflow["workflow_id"]}, token=middle.access_token)
        await error_of(hub.call("messages.get", {"message_id": "msg_nope"}, token=quiet.access_token))
        await error_of(hub.call("auth.whoami", token="prl_not_a_key"))

        pages, cursor = [], None
        while True:
            page = await hub.call("admin.usage", {"sort": "messages_sent", "limit": 2,
                                                  **({"cursor": cursor} if cursor else {})}, token=hub.admin_key)
            pages.append(page["items"])
            if (cursor := page["next_cursor"]) is None:
                break
        analytics = await hub.call("admin.analytics", {}, token=hub.admin_key)

    assert [len(page) for page in pages] == [2, 2]  # the admin, who called admin.usage, is the fourth
    ranked = [item for page in pages for item in page]
    assert [item["handle"] for item in ranked[:3]] == [busy.handle, middle.handle, quiet.handle]
    assert [item["total"]["messages_sent"] for item in ranked] == [3, 2, 1, 0]
    assert ranked[3]["agent_id"] == server.admin["agent_id"]
    assert ranked[1]["total"]["executions_started"] == 1
    assert ranked[2]["total"]["errors"] == {"not_found": 1}
    [day] = analytics["days"]
    assert day["day"] == today().isoformat()
    assert day["active_agents"] == 4
    assert day["messages_sent"] == 6
    assert day["executions_started"] == 1
    assert day["errors"] == {"not_found": 1, "unauthorized": 1}
    assert day["requests"] == 6 + 2 + 1 + len(pages) + 1  # sends, workflow saves and runs, the failed get, admin


@pytest.mark.parametrize("position", ["[-1]", "[1000000000000000000000]"], ids=["negative", "huge"])
async def test_a_hand_made_cursor_is_refused(hub: HubClient, position: str) -> None:
    cursor = base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")

    error = await error_of(hub.call("admin.usage", {"cursor": cursor}, token=hub.admin_key))

    assert (error.code, error.details) == ("invalid_request", {"field": "cursor"})
