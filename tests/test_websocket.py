"""JSON-RPC 2.0 over a WebSocket at /ws, black-box against real `parley serve` processes."""

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from bridges.client._websocket import ConnectionClosed, HandshakeRejected, WebSocketConnection

from .client import Agent, HubClient, RpcError, RpcSocket, unique_handle
from .conftest import sqlite_only
from .messaging import metric_values
from .servers import HubServer, drop_postgres_database, make_server

TIGHT = {"max_frame_bytes": "2048", "ws_heartbeat_seconds": "0.2", "ws_auth_timeout_seconds": "0.5",
         "ws_outbound_queue": "4"}


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str, store_kind: str) -> Iterator[HubServer]:
    """A hub with a 2 KiB frame limit, heartbeats every 0.2 s, 0.5 s to authenticate and 4 frames of
    outbound queue per connection."""
    server = make_server(anyio_backend, store_kind, tmp_path_factory.mktemp(f"tight-{anyio_backend}-{store_kind}"),
                         **TIGHT)
    server.launch()
    try:
        yield server
    finally:
        code = server.stop()
        if server.database_url:
            drop_postgres_database(server.database_url)
        assert code == 0, f"the hub exited with {code} on SIGTERM:\n{server.log()}"


@pytest.fixture
async def tight(tight_server: HubServer) -> Any:
    async with HubClient(tight_server) as client:
        yield client


def request(method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        body["id"] = request_id
    if params is not None:
        body["params"] = params
    return body


async def closed_with(ws: RpcSocket, seconds: float = 10) -> int:
    """Read (and drop) frames until the hub closes the connection; the close code."""
    with anyio.fail_after(seconds):
        try:
            while True:
                await ws.connection.receive()
        except ConnectionClosed as closed:
            return closed.code


def error_code(error: RpcError) -> tuple[int, str]:
    return error.jsonrpc_code, error.code


# -- authentication ---------------------------------------------------------------------------------


async def test_a_bearer_access_token_at_the_upgrade_authenticates_the_connection(hub: HubClient) -> None:
    agent = await hub.register("ws-bearer")
    async with await RpcSocket.open(hub.server, agent.access_token) as ws:
        me = await ws.call("auth.whoami")
    assert me["agent"]["agent_id"] == agent.agent_id
    assert me["credential"]["kind"] == "access_token"


async def test_an_api_key_at_the_upgrade_authenticates_the_connection(hub: HubClient) -> None:
    agent = await hub.register("ws-key")
    key = await hub.api_key(agent)
    async with await RpcSocket.open(hub.server, key) as ws:
        assert (await ws.call("auth.whoami"))["credential"]["kind"] == "api_key"
    async with RpcSocket(await WebSocketConnection.connect(hub.server.ws_url, {"x-api-key": key})) as ws:
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id


async def test_a_refused_credential_at_the_upgrade_gets_http_401_and_no_connection(hub: HubClient) -> None:
    agent = await hub.register("ws-refused")
    for headers in [
        {"authorization": "Bearer not-a-token"},
        {"authorization": "Bearer " + agent.access_token[:-4] + "AAAA"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"authorization": "Bearer " + agent.refresh_token},
        {"x-api-key": "prl_abc_def"},
    ]:
        with pytest.raises(HandshakeRejected) as refused:
            await WebSocketConnection.connect(hub.server.ws_url, headers)
        assert refused.value.status == 401, headers
        assert json.loads(refused.value.body)["error"]["code"] == "unauthorized", headers


async def test_auth_authenticate_binds_an_access_token_or_an_api_key(hub: HubClient) -> None:
    agent = await hub.register("ws-auth")
    key = await hub.api_key(agent, scopes=["agents:read"])
    for credential, scopes in ((agent.access_token, None), (key, ["agents:read"])):
        async with await RpcSocket.open(hub.server) as ws:
            bound = await ws.call("auth.authenticate", {"token": credential})
            assert (bound["agent_id"], bound["handle"]) == (agent.agent_id, agent.handle)
            if scopes is not None:
                assert bound["scopes"] == scopes
            me = await ws.call("auth.whoami")
            assert me["agent"]["agent_id"] == agent.agent_id


async def test_a_refused_auth_authenticate_leaves_the_connection_open_and_anonymous(hub: HubClient) -> None:
    agent = await hub.register("ws-bad-auth")
    async with await RpcSocket.open(hub.server) as ws:
        for params, expected in [
            ({"token": "not-a-token"}, (-32001, "unauthorized")),
            ({"token": agent.refresh_token}, (-32001, "unauthorized")),
            ({"token": "prl_abc_def"}, (-32001, "unauthorized")),
        ]:
            with pytest.raises(RpcError) as refused:
                await ws.call("auth.authenticate", params)
            assert error_code(refused.value) == expected
        with pytest.raises(RpcError) as refused:
            await ws.call("auth.whoami")
        assert error_code(refused.value) == (-32001, "unauthorized")
        await ws.call("auth.authenticate", {"token": agent.access_token})
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id


async def test_auth_authenticate_with_bad_params_is_invalid_params_with_field_details(hub: HubClient) -> None:
    async with await RpcSocket.open(hub.server) as ws:
        for params, fields in [({}, {"token"}), ({"token": 5}, {"token"}), ({"token": "x", "extra": 1}, {"extra"})]:
            with pytest.raises(RpcError) as refused:
                await ws.call("auth.authenticate", params)
            assert error_code(refused.value) == (-32602, "invalid_request")
            assert {item["field"] for item in refused.value.details["errors"]} == fields
        await ws.send(request("auth.authenticate", [1, 2], "array"))
        answer = await ws.receive()
        assert (answer["id"], answer["error"]["code"], answer["error"]["data"]["code"]) == ("array", -32602,
                                                                                           "invalid_request")


async def test_an_operation_needing_a_credential_before_authenticating_is_unauthorized(hub: HubClient) -> None:
    agent = await hub.register("ws-early")
    async with await RpcSocket.open(hub.server) as ws:
        for method, params in [("auth.whoami", None), ("keys.list", None), ("agents.get", {"agent": agent.handle})]:
            with pytest.raises(RpcError) as refused:
                await ws.call(method, params)
            assert error_code(refused.value) == (-32001, "unauthorized"), method
        await ws.call("auth.authenticate", {"token": agent.access_token})
        assert (await ws.call("agents.get", {"agent": agent.handle}))["agent_id"] == agent.agent_id


async def test_a_key_revoked_elsewhere_stops_working_on_an_open_connection(hub: HubClient) -> None:
    agent = await hub.register("ws-revoke")
    created = await hub.call("keys.create", {"name": "ws"}, token=agent.access_token)
    async with await RpcSocket.open(hub.server, created["api_key"]) as ws:
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id
        await hub.call("keys.revoke", {"key_id": created["key"]["key_id"]}, token=agent.access_token)
        with pytest.raises(RpcError) as refused:
            await ws.call("auth.whoami")
        assert error_code(refused.value) == (-32001, "unauthorized")


async def test_not_authenticating_in_time_closes_the_connection_with_4401(tight: HubClient) -> None:
    async with await RpcSocket.open(tight.server) as ws:
        assert await closed_with(ws) == 4401


async def test_a_refused_authentication_does_not_stop_the_deadline(tight: HubClient) -> None:
    async with await RpcSocket.open(tight.server) as ws:
        with pytest.raises(RpcError) as refused:
            await ws.call("auth.authenticate", {"token": "not-a-token"})
        assert error_code(refused.value) == (-32001, "unauthorized")
        assert await closed_with(ws) == 4401


async def test_authenticating_in_time_keeps_the_connection_past_the_deadline(tight: HubClient) -> None:
    agent = await tight.register("ws-in-time")
    async with await RpcSocket.open(tight.server) as ws:
        await ws.call("auth.authenticate", {"token": agent.access_token})
        # Five heartbeats 0.2 s apart: the 0.5 s deadline has passed on the hub's own clock.
        with anyio.fail_after(10):
            while len(ws.notifications) < 5:
                frame = json.loads(await ws.connection.receive())
                assert frame.get("method") == "heartbeat", frame
                ws.notifications.append(frame)
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id


async def test_authenticating_at_the_upgrade_is_not_subject_to_the_deadline(tight: HubClient) -> None:
    agent = await tight.register("ws-upgrade-time")
    async with await RpcSocket.open(tight.server, agent.access_token) as ws:
        with anyio.fail_after(10):
            while len(ws.notifications) < 5:
                ws.notifications.append(json.loads(await ws.connection.receive()))
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id


# -- framing --------------------------------------------------------------------------------------------


async def test_malformed_json_is_a_parse_error_and_the_connection_survives(hub: HubClient) -> None:
    agent = await hub.register("ws-parse")
    async with await RpcSocket.open(hub.server, agent.access_token) as ws:
        for text in ['{"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"', "nonsense", "{'single': 'quotes'}"]:
            await ws.send(text)
            answer = await ws.receive()
            assert answer["id"] is None
            assert (answer["error"]["code"], answer["error"]["data"]["code"]) == (-32700, "invalid_request")
        for payload, code in [(5, -32600), ({"jsonrpc": "2.0", "id": 2}, -32600), ([], -32600)]:
            await ws.send(payload)
            answer = await ws.receive()
            assert (answer["error"]["code"], answer["error"]["data"]["code"]) == (code, "invalid_request")
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id


async def test_json_nested_too_deep_is_refused_and_the_connection_survives(hub: HubClient) -> None:
    agent = await hub.register("ws-deep")
    async with await RpcSocket.open(hub.server, agent.access_token) as ws:
        for depth in (40, 600, 50_000):
            await ws.send("[" * depth + "]" * depth)
            answer = await ws.receive()
            assert (answer["error"]["code"], answer["error"]["data"]["code"]) == (-32600, "invalid_request"), depth
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id


async def test_a_batch_is_answered_in_one_frame_in_request_order(hub: HubClient) -> None:
    agent = await hub.register("ws-batch")
    other = unique_handle("ws-batch-n")
    async with await RpcSocket.open(hub.server, agent.access_token) as ws:
        await ws.send([
            request("auth.whoami", request_id="a"),
            request("no.such", request_id="b"),
            request("auth.register", {"handle": other}, request_id=None),
            request("agents.get", {"agent": "nobody-at-all"}, request_id=3),
            request("agents.get", {"agent": agent.handle}, request_id=4),
        ])
        answers = await ws.receive()
        assert [answer["id"] for answer in answers] == ["a", "b", 3, 4]
        assert answers[0]["result"]["agent"]["agent_id"] == agent.agent_id
        assert (answers[1]["error"]["code"], answers[1]["error"]["data"]["code"]) == (-32601, "method_not_found")
        assert (answers[2]["error"]["code"], answers[2]["error"]["data"]["code"]) == (-32004, "not_found")
        assert answers[3]["result"]["handle"] == agent.handle
        assert (await ws.call("agents.get", {"agent": other}))["handle"] == other  # the notification ran


async def test_a_batch_of_notifications_gets_no_frame(hub: HubClient) -> None:
    agent = await hub.register("ws-quiet")
    handles = [unique_handle("ws-quiet-n") for _ in range(2)]
    async with await RpcSocket.open(hub.server, agent.access_token) as ws:
        await ws.send([request("auth.register", {"handle": handle}, request_id=None) for handle in handles])
        await ws.send(request("auth.whoami", request_id=None))
        # The next frame is the answer to this call: the notifications got none.
        assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id
        # They ran (concurrently with that call, so perhaps a moment later).
        with anyio.fail_after(10):
            for handle in handles:
                while (await ws.call("agents.search", {"q": handle}))["items"] == []:
                    await anyio.sleep(0.01)


async def test_a_batch_over_max_batch_is_refused_whole_over_websocket(hub: HubClient) -> None:
    agent = await hub.register("ws-big-batch")
    handle = unique_handle("ws-never")
    async with await RpcSocket.open(hub.server, agent.access_token) as ws:
        await ws.send([request("auth.register", {"handle": handle}, 0)] +
                      [request("auth.whoami", request_id=i) for i in range(1, 101)])
        answer = await ws.receive()
        assert isinstance(answer, dict)
        assert (answer["error"]["code"], answer["error"]["data"]["code"]) == (-32013, "payload_too_large")
        with pytest.raises(RpcError) as missing:
            await ws.call("agents.get", {"agent": handle})
        assert missing.value.code == "not_found"


async def test_a_frame_at_the_size_limit_is_served(tight: HubClient) -> None:
    agent = await tight.register("ws-fits")
    async with await RpcSocket.open(tight.server, agent.access_token) as ws:
        text = json.dumps(request("auth.whoami", request_id="fits"))
        await ws.send(text + " " * (2048 - len(text)))  # JSON allows trailing whitespace
        answer = await ws.receive()
        assert answer["id"] == "fits" and answer["result"]["agent"]["agent_id"] == agent.agent_id


async def test_a_frame_over_max_frame_bytes_closes_the_connection_with_1009(tight: HubClient) -> None:
    agent = await tight.register("ws-too-big")
    for padding in (2049, 64 * 1024):
        async with await RpcSocket.open(tight.server, agent.access_token) as ws:
            text = json.dumps(request("auth.whoami", request_id="big"))
            await ws.send(text + " " * (padding - len(text)))
            assert await closed_with(ws) == 1009, padding


async def test_a_frame_over_the_limit_in_bytes_but_not_in_characters_closes_with_1009(tight: HubClient) -> None:
    agent = await tight.register("ws-wide")
    async with await RpcSocket.open(tight.server, agent.access_token) as ws:
        await ws.send(json.dumps(request("auth.whoami", {"pad": "é" * 1500}), ensure_ascii=False))
        assert await closed_with(ws) == 1009


async def test_heartbeats_arrive_as_notifications(tight: HubClient) -> None:
    agent = await tight.register("ws-heart")
    async with await RpcSocket.open(tight.server, agent.access_token) as ws:
        with anyio.fail_after(10):
            beats = [json.loads(await ws.connection.receive()) for _ in range(3)]
    for beat in beats:
        assert beat["jsonrpc"] == "2.0" and beat["method"] == "heartbeat"
        assert "id" not in beat
        assert isinstance(beat["params"]["time"], str)
    assert beats[0]["params"]["time"] < beats[1]["params"]["time"] < beats[2]["params"]["time"]


@sqlite_only
async def test_a_request_read_while_the_connection_waits_for_a_slot_survives_a_heartbeat(start_hub: Any) -> None:
    """One request in flight at a time and heartbeats every 20 ms: the hub has read the next request
    and waits for its slot when a heartbeat falls due. That request is still answered."""
    server: HubServer = start_hub(ws_max_in_flight="1", ws_heartbeat_seconds="0.02")
    count = 300
    async with HubClient(server) as client:
        agent = await client.register("ws-slots")
        async with await RpcSocket.open(server, agent.access_token) as ws:

            async def send_all() -> None:
                for i in range(count):
                    await ws.send(request("auth.whoami", request_id=i))

            answered = set()
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(send_all)
                    while len(answered) < count:
                        frame = await ws.receive()
                        assert frame["result"]["agent"]["agent_id"] == agent.agent_id, frame
                        answered.add(frame["id"])
    assert answered == set(range(count))
    assert ws.notifications and all(frame["method"] == "heartbeat" for frame in ws.notifications)


@sqlite_only
async def test_frames_go_one_send_at_a_time_under_a_server_without_send_many(
    tmp_path: Path, anyio_backend: str, store_kind: str
) -> None:
    """Under an ASGI server that is not one of the hub's own (stock uvicorn), the session has no
    `parley.websocket.send_many` and writes each frame with its own `websocket.send`: pipelined
    requests are all answered, with their ids."""
    server = make_server("asyncio", store_kind, tmp_path)
    server.launch([sys.executable, "-m", "tests.stock_uvicorn", str(server.port)])
    try:
        async with HubClient(server) as client:
            agent = await client.register("ws-stock")
        count = 50
        async with await RpcSocket.open(server, agent.access_token) as ws:
            for i in range(count):
                await ws.send(request("auth.whoami", request_id=i))
            with anyio.fail_after(30):
                answers = [await ws.receive() for _ in range(count)]
        assert sorted(answer["id"] for answer in answers) == list(range(count))
        assert {answer["result"]["agent"]["agent_id"] for answer in answers} == {agent.agent_id}
    finally:
        server.stop()  # stock uvicorn ends by re-raising SIGTERM: its exit code is not the hub's to check


async def test_many_concurrent_requests_on_one_connection_are_each_answered_with_their_id(hub: HubClient) -> None:
    agent = await hub.register("ws-many")
    others = [await hub.register("ws-many-o") for _ in range(3)]
    handles = [agent.handle] + [other.handle for other in others]
    count = 400
    async with await RpcSocket.open(hub.server, agent.access_token) as ws:
        expected: dict[Any, str] = {}

        async def send_all() -> None:
            for i in range(count):
                request_id: Any = f"r{i}" if i % 2 else i
                expected[request_id] = handles[i % len(handles)]
                await ws.send(request("agents.get", {"agent": expected[request_id]}, request_id))

        answers: dict[Any, str] = {}
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all)
                while len(answers) < count:
                    answer = await ws.receive()
                    assert answer["id"] not in answers, answer
                    answers[answer["id"]] = answer["result"]["handle"]
    assert answers == expected


# -- slow consumers -------------------------------------------------------------------------------------


async def gauge(client: HubClient, name: str) -> int:
    """A gauge of the hub's /metrics (0 until it is set)."""
    return int((await metric_values(client.http)).get(name, 0))


async def _slow_consumer_disconnects(client: HubClient) -> int:
    return await gauge(client, "parley_ws_slow_consumer_disconnects")


async def test_a_client_that_does_not_read_is_closed_with_1013_not_buffered(tight: HubClient) -> None:
    server = tight.server
    tag = f"slow-{unique_handle('t')[-6:]}"
    big_profile = {"description": "d" * 1024, "metadata": {"blob": "m" * 4000}, "tags": [tag]}
    async with HubClient(server) as client:
        agents: list[Agent] = []

        async def add_agent() -> None:
            agent = await client.register("ws-slow")
            await client.call("agents.update_profile", big_profile, token=agent.access_token)
            agents.append(agent)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(add_agent)
        agent = agents[0]
        disconnects_before = await _slow_consumer_disconnects(client)
        async with await RpcSocket.open(server, agent.access_token) as ws:
            # Keep the client's socket buffer small, so the hub's output backs up after a few MiB, not
            # after whatever the kernel would auto-tune it to.
            raw: socket.socket = ws.connection._stream.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            # 2000 searches, each answered with 20 profiles of ~5 KiB: ~200 MiB if the hub buffered it all.
            frames = 200
            batch = [request("agents.search", {"tag": tag, "limit": 200}, request_id=i) for i in range(10)]
            for _ in range(frames):
                await ws.send(batch)
            # Read nothing until the hub has given up on us; then take what it sent.
            with anyio.fail_after(60):
                while await _slow_consumer_disconnects(client) == disconnects_before:
                    await anyio.sleep(0.02)
            answered = 0
            with pytest.raises(ConnectionClosed) as closed, anyio.fail_after(30):
                while True:
                    frame = json.loads(await ws.connection.receive())
                    if isinstance(frame, list):
                        assert len(frame[0]["result"]["items"]) == 20
                        answered += 1
        assert closed.value.code == 1013
        assert answered < frames
        assert await _slow_consumer_disconnects(client) == disconnects_before + 1
        # The hub is fine, and so is a new connection of the same agent.
        async with await RpcSocket.open(server, agent.access_token) as ws:
            assert (await ws.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id


# -- dead peers -----------------------------------------------------------------------------------------


@sqlite_only
async def test_a_peer_that_stops_answering_pings_is_dropped_within_interval_plus_timeout(start_hub: Any) -> None:
    interval, timeout = 0.5, 1.5  # time enough for a busy machine to answer
    server: HubServer = start_hub(ws_ping_seconds=str(interval), ws_ping_timeout_seconds=str(timeout))
    async with HubClient(server) as client:
        agent = await client.register("ws-silent")
        alive = await RpcSocket.open(server, agent.access_token)
        silent = await RpcSocket.open(server, agent.access_token)
        try:
            await silent.call("auth.whoami")
            silent_since = time.monotonic()  # from here on it reads nothing, so it answers no ping
            assert await gauge(client, "parley_ws_connections") == 2

            async with anyio.create_task_group() as tg:
                # Reading answers the hub's pings (the client does that as it reads).
                tg.start_soon(alive.connection.receive)
                with anyio.fail_after(10):
                    while await gauge(client, "parley_ws_connections") != 1:
                        await anyio.sleep(0.05)
                dropped_after = time.monotonic() - silent_since
                # Kept reading well past its silent twin's deadline, the answering peer is still served.
                await anyio.sleep(interval + timeout)
                tg.cancel_scope.cancel()
            assert dropped_after < interval + timeout + 2.0  # slack for a busy machine
            assert await gauge(client, "parley_ws_connections") == 1
            assert (await alive.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id
            with pytest.raises(ConnectionClosed), anyio.fail_after(10):
                await silent.receive()
        finally:
            await alive.connection.close()
            await silent.connection.close()
