"""JSON-RPC 2.0 over HTTP POST at /rpc, black-box against real `parley serve` processes.

Every refusal is checked twice: the answer (JSON-RPC code, the hub's `data.code`, the HTTP status),
and that nothing the refused request asked for was written (a refused registration leaves its
handle free).
"""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from .client import HubClient, RpcError, unique_handle
from .conftest import ServerFactory, postgres_only
from .messaging import WAIT, events_list_count
from .servers import drop_postgres_database, make_server
from .tcp_proxy import TcpProxy

RPC = "/rpc"
JSON_HEADERS = {"content-type": "application/json"}


def request(method: str, params: Any = None, request_id: Any = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, **extra}
    if request_id is not None:
        body["id"] = request_id
    if params is not None:
        body["params"] = params
    return body


def register(handle: str, request_id: Any = 1) -> dict[str, Any]:
    return request("auth.register", {"handle": handle}, request_id)


async def post_raw(hub: HubClient, content: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await hub.http.post(RPC, content=content, headers={**JSON_HEADERS, **(headers or {})})


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    """The error object of one JSON-RPC response, checked to carry the hub's string code."""
    assert "result" not in response, response
    error = response["error"]
    assert isinstance(error["code"], int)
    assert isinstance(error["data"]["code"], str) and error["data"]["code"], error
    return error


async def assert_handle_free(hub: HubClient, handle: str) -> None:
    """Nothing registered `handle`: the operator cannot find it."""
    try:
        await hub.call("agents.get", {"agent": handle}, token=hub.admin_key)
    except RpcError as error:
        assert error.code == "not_found"
    else:
        raise AssertionError(f"{handle} was registered")


async def assert_handle_taken(hub: HubClient, handle: str) -> None:
    profile = await hub.call("agents.get", {"agent": handle}, token=hub.admin_key)
    assert profile["handle"] == handle


# -- single calls and batches -------------------------------------------------------------------


async def test_a_single_call_answers_with_its_result_and_id(hub: HubClient) -> None:
    handle = unique_handle("single")
    response = await hub.post_rpc(register(handle, request_id="req-1"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == "req-1"
    assert body["result"]["handle"] == handle
    await assert_handle_taken(hub, handle)


async def test_a_batch_answers_successes_and_errors_in_request_order_and_runs_notifications(hub: HubClient) -> None:
    first, second, silent = unique_handle("batch-a"), unique_handle("batch-b"), unique_handle("batch-n")
    batch = [
        register(first, request_id=10),
        request("auth.whoami", request_id="needs-auth"),
        request("no.such_method", request_id=3),
        register(silent, request_id=None),  # a notification: runs, no answer
        request("auth.register", {"handle": 7}, request_id=4),
        register(second, request_id="last"),
    ]
    response = await hub.post_rpc(batch)
    assert response.status_code == 200
    answers = response.json()
    assert [answer["id"] for answer in answers] == [10, "needs-auth", 3, 4, "last"]
    assert answers[0]["result"]["handle"] == first
    assert (error_of(answers[1])["code"], error_of(answers[1])["data"]["code"]) == (-32001, "unauthorized")
    assert (error_of(answers[2])["code"], error_of(answers[2])["data"]["code"]) == (-32601, "method_not_found")
    assert (error_of(answers[3])["code"], error_of(answers[3])["data"]["code"]) == (-32602, "invalid_request")
    assert answers[4]["result"]["handle"] == second
    for handle in (first, second, silent):
        await assert_handle_taken(hub, handle)


async def test_a_batch_of_only_notifications_gets_204_and_still_runs(hub: HubClient) -> None:
    handles = [unique_handle("notify") for _ in range(3)]
    response = await hub.post_rpc([register(handle, request_id=None) for handle in handles])
    assert response.status_code == 204
    assert response.content == b""
    for handle in handles:
        await assert_handle_taken(hub, handle)


async def test_a_single_notification_gets_204_even_when_it_fails(hub: HubClient) -> None:
    response = await hub.post_rpc(request("auth.whoami", request_id=None))
    assert response.status_code == 204
    assert response.content == b""


async def test_an_empty_batch_is_an_invalid_request(hub: HubClient) -> None:
    response = await hub.post_rpc([])
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, dict) and body["id"] is None
    assert (error_of(body)["code"], error_of(body)["data"]["code"]) == (-32600, "invalid_request")


async def test_a_batch_at_the_limit_is_answered_whole(hub: HubClient) -> None:
    response = await hub.post_rpc([request("agents.get", {"agent": "nobody-here"}, request_id=i) for i in range(100)])
    answers = response.json()
    assert [answer["id"] for answer in answers] == list(range(100))
    assert {error_of(answer)["data"]["code"] for answer in answers} == {"unauthorized"}


async def test_a_batch_over_max_batch_is_refused_whole_and_runs_nothing(hub: HubClient) -> None:
    handles = [unique_handle("over") for _ in range(3)]
    batch = [register(handle, request_id=i) for i, handle in enumerate(handles)]
    batch += [request("agents.get", {"agent": "x-y-z"}, request_id=i) for i in range(3, 101)]
    response = await hub.post_rpc(batch)
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, dict) and body["id"] is None
    error = error_of(body)
    assert (error["code"], error["data"]["code"]) == (-32013, "payload_too_large")
    assert error["data"]["details"]["max_batch"] == 100
    for handle in handles:
        await assert_handle_free(hub, handle)


# -- malformed payloads ---------------------------------------------------------------------------


async def test_a_body_that_is_not_json_is_a_parse_error(hub: HubClient) -> None:
    handle = unique_handle("parse")
    for content in ['{"jsonrpc": "2.0", "id": 1, "method": "auth.register", "params": {"handle": "' + handle + '"}',
                    "", "not json at all", b"\xff\xfe\x00"]:
        response = await post_raw(hub, content)
        assert response.status_code == 200
        body = response.json()
        assert body["id"] is None
        assert (error_of(body)["code"], error_of(body)["data"]["code"]) == (-32700, "invalid_request")
    await assert_handle_free(hub, handle)


async def test_malformed_requests_are_invalid_requests_and_run_nothing(hub: HubClient) -> None:
    cases: list[tuple[Any, Any]] = []  # (request, the id the error must carry)
    handles = []

    def case(make: Any, expected_id: Any) -> None:
        handle = unique_handle("shape")
        handles.append(handle)
        cases.append((make(handle), expected_id))

    case(lambda h: {"method": "auth.register", "id": 1, "params": {"handle": h}}, 1)  # no "jsonrpc"
    case(lambda h: {"jsonrpc": "1.0", "method": "auth.register", "id": 2, "params": {"handle": h}}, 2)
    case(lambda h: {"jsonrpc": 2.0, "method": "auth.register", "id": 3, "params": {"handle": h}}, 3)
    case(lambda h: {"jsonrpc": "2.0", "id": 4, "params": {"handle": h}}, 4)  # no method
    case(lambda h: {"jsonrpc": "2.0", "method": ["auth.register"], "id": 5, "params": {"handle": h}}, 5)
    case(lambda h: {"jsonrpc": "2.0", "method": "auth.register", "id": 1.5, "params": {"handle": h}}, None)
    case(lambda h: {"jsonrpc": "2.0", "method": "auth.register", "id": True, "params": {"handle": h}}, None)
    case(lambda h: {"jsonrpc": "2.0", "method": "auth.register", "id": {"n": 1}, "params": {"handle": h}}, None)
    case(lambda h: {"jsonrpc": "2.0", "method": "auth.register", "id": [6], "params": {"handle": h}}, None)
    case(lambda h: {"jsonrpc": "2.0", "method": "auth.register", "id": 7, "params": {"handle": h}, "extra": 1}, 7)
    case(lambda h: {"jsonrpc": "2.0", "method": "auth.register", "id": 8, "params": h}, 8)  # params a string
    case(lambda h: {"jsonrpc": "2.0", "method": "auth.register", "id": 9, "params": 9, "h": h}, 9)
    case(lambda h: {"jsonrpc": "2.0", "method": "auth.register", "id": 10, "params": None, "h": h}, 10)
    for body, expected_id in cases:
        response = await hub.post_rpc(body)
        assert response.status_code == 200
        answer = response.json()
        assert answer["id"] == expected_id, (body, answer)
        assert (error_of(answer)["code"], error_of(answer)["data"]["code"]) == (-32600, "invalid_request"), body
    for handle in handles:
        await assert_handle_free(hub, handle)


async def test_items_of_a_batch_that_are_not_requests_are_answered_as_invalid_requests(hub: HubClient) -> None:
    handle = unique_handle("mixed")
    answers = (await hub.post_rpc([1, "text", None, [], register(handle, request_id="ok")])).json()
    assert len(answers) == 5
    for answer in answers[:4]:
        assert answer["id"] is None
        assert (error_of(answer)["code"], error_of(answer)["data"]["code"]) == (-32600, "invalid_request")
    assert answers[4]["id"] == "ok" and answers[4]["result"]["handle"] == handle


async def test_a_payload_that_is_a_json_scalar_is_an_invalid_request(hub: HubClient) -> None:
    for content in ["1", '"auth.register"', "null", "true"]:
        body = (await post_raw(hub, content)).json()
        assert (error_of(body)["code"], error_of(body)["data"]["code"]) == (-32600, "invalid_request"), content


async def test_an_unknown_method_is_method_not_found(hub: HubClient) -> None:
    for method in ["no.such", "", "auth.register ", "AUTH.REGISTER"]:
        body = (await hub.post_rpc(request(method, {"handle": unique_handle("m")}, request_id="m"))).json()
        assert body["id"] == "m"
        assert (error_of(body)["code"], error_of(body)["data"]["code"]) == (-32601, "method_not_found"), method


async def test_params_given_as_an_array_are_invalid_params(hub: HubClient) -> None:
    handle = unique_handle("array")
    body = (await hub.post_rpc(request("auth.register", [handle], request_id=1))).json()
    assert (error_of(body)["code"], error_of(body)["data"]["code"]) == (-32602, "invalid_request")
    await assert_handle_free(hub, handle)


async def test_wrong_types_and_unknown_fields_are_invalid_params_with_field_details(hub: HubClient) -> None:
    handle = unique_handle("fields")
    cases = [
        ({"handle": 12345}, {"handle"}),
        ({"handle": handle, "surprise": True}, {"surprise"}),
        ({"handle": handle, "display_name": ["not", "a", "string"]}, {"display_name"}),
        ({"handle": "NO SPACES ALLOWED"}, {"handle"}),
        ({}, {"handle"}),
        ({"handle": 1, "other": 2}, {"handle", "other"}),
    ]
    for params, fields in cases:
        body = (await hub.post_rpc(request("auth.register", params, request_id="p"))).json()
        error = error_of(body)
        assert body["id"] == "p"
        assert (error["code"], error["data"]["code"]) == (-32602, "invalid_request"), params
        assert {item["field"] for item in error["data"]["details"]["errors"]} == fields, params
    await assert_handle_free(hub, handle)


async def test_nested_invalid_params_name_the_nested_field(hub: HubClient) -> None:
    agent = await hub.register("nested")
    body = (await hub.post_rpc(request("keys.create", {"name": "k", "scopes": ["agents:read", "root"]}),
                               agent.access_token)).json()
    error = error_of(body)
    assert (error["code"], error["data"]["code"]) == (-32602, "invalid_request")
    assert [item["field"] for item in error["data"]["details"]["errors"]] == ["scopes.1"]
    assert (await hub.call("keys.list", token=agent.access_token))["items"] == []


async def test_json_deeper_than_max_json_depth_is_refused_whole(hub: HubClient) -> None:
    handle = unique_handle("deep")

    def nested(levels: int) -> Any:
        value: Any = 0
        for _ in range(levels):
            value = [value]
        return value

    # The request object is level 1, its params level 2, so `x` adds (depth - 2) levels.
    at_limit = request("auth.register", {"handle": handle, "x": nested(30)})
    body = (await hub.post_rpc(at_limit)).json()  # 32 levels: reaches the operation, which refuses `x`
    assert (error_of(body)["code"], [e["field"] for e in error_of(body)["data"]["details"]["errors"]]) == (-32602,
                                                                                                           ["x"])
    # Brackets inside a string are not nesting: the request reaches the operation too.
    body = (await hub.post_rpc(request("auth.register", {"handle": handle, "x": "[{" * 100}))).json()
    assert [e["field"] for e in error_of(body)["data"]["details"]["errors"]] == ["x"]
    for depth in (33, 600):
        body = (await hub.post_rpc([register(handle), request("auth.whoami", {"x": nested(depth - 2)})])).json()
        assert isinstance(body, dict), depth
        error = error_of(body)
        assert (error["code"], error["data"]["code"]) == (-32600, "invalid_request"), depth
        assert error["data"]["details"]["max_depth"] == 32
    await assert_handle_free(hub, handle)


async def test_json_too_deep_to_parse_is_refused_without_a_server_error(hub: HubClient) -> None:
    for depth in (5_000, 100_000):
        response = await post_raw(hub, "[" * depth + "]" * depth)
        assert response.status_code == 200
        error = error_of(response.json())
        assert (error["code"], error["data"]["code"]) == (-32600, "invalid_request")
    assert (await hub.http.get("/health")).status_code == 200


# -- HTTP-level refusals ---------------------------------------------------------------------------


def _transport_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert body["error"]["data"]["code"] == code
    return body["error"]


async def test_a_body_over_max_body_bytes_is_refused_with_413(hub: HubClient) -> None:
    handle = unique_handle("big")
    filler = "x" * (1024 * 1024)
    body = json.dumps(request("auth.register", {"handle": handle, "description": filler}))
    error = _transport_error(await post_raw(hub, body), 413, "payload_too_large")
    assert error["data"]["details"]["max_bytes"] == 1024 * 1024
    await assert_handle_free(hub, handle)


async def test_a_chunked_body_over_the_limit_is_refused_with_413(hub: HubClient) -> None:
    handle = unique_handle("chunked")
    payload = json.dumps(request("auth.register", {"handle": handle, "description": "y" * (2 * 1024 * 1024)}))

    async def chunks() -> AsyncIterator[bytes]:
        data = payload.encode()
        for start in range(0, len(data), 64 * 1024):
            yield data[start:start + 64 * 1024]

    response = await hub.http.post(RPC, content=chunks(), headers=JSON_HEADERS)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    _transport_error(response, 413, "payload_too_large")
    await assert_handle_free(hub, handle)


async def test_a_chunked_body_under_the_limit_is_served(hub: HubClient) -> None:
    handle = unique_handle("chunked-ok")
    payload = json.dumps(register(handle)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 7):
            yield payload[start:start + 7]

    response = await hub.http.post(RPC, content=chunks(), headers=JSON_HEADERS)
    assert response.json()["result"]["handle"] == handle


async def test_a_declared_content_length_over_the_limit_is_refused_before_the_body_is_sent(hub: HubClient) -> None:
    head = (
        f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:{hub.server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", hub.server.port) as stream:
            await stream.send(head + b'{"jsonrpc": "2.0", ')  # a sliver of the 50 MiB it promised
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive()
    assert received.split(b"\r\n", 1)[0].split(b" ")[1] == b"413"


async def response_head(port: int, request: bytes) -> list[bytes]:
    """The status line and header lines the hub answers `request` with, on a connection of its own."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive()
    return received.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")


async def test_an_answer_given_before_the_body_is_read_closes_the_connection(hub: HubClient) -> None:
    """hypercorn closes such a connection without a word, and a client's next request on it was lost
    (the fuzz test saw "disconnected without a response" now and then): the answer must say so."""
    head = (f"PATCH /rpc HTTP/1.1\r\nHost: 127.0.0.1:{hub.server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 100000\r\n\r\n").encode()
    lines = await response_head(hub.server.port, head + b'{"jsonrpc": "2.0", ')
    assert lines[0].split(b" ")[1] == b"405"
    assert b"connection: close" in lines
    body = json.dumps(request("no.such")).encode()
    whole = (f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:{hub.server.port}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    lines = await response_head(hub.server.port, whole)
    assert lines[0].split(b" ")[1] == b"200"
    assert b"connection: close" not in lines  # a body read whole keeps the connection for the next request


def _hidden_request(port: int, handle: str) -> bytes:
    """A whole second HTTP request, registering `handle`: what a smuggler hides in a first one's body."""
    body = json.dumps(register(handle)).encode()
    return (f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _smuggling_attempts(port: int, hidden: bytes) -> dict[str, bytes]:
    """Requests whose framing a front proxy and the hub could read differently (RFC 9112 section 6.3): if the
    hub took `hidden` for a request of its own, a proxy that passed it all as one would have been fooled."""
    start = f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    empty_chunked = b"0\r\n\r\n" + hidden
    one_chunk = f"{len(hidden):x}\r\n".encode() + hidden + b"\r\n0\r\n\r\n"
    return {
        # CL.TE: a proxy reads Content-Length (all of it one body), the hub Transfer-Encoding (an empty body).
        "CL.TE": (start + f"Content-Length: {len(empty_chunked)}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        + empty_chunked,
        # TE.CL: a proxy reads the chunked body whole, the hub a Content-Length that stops inside it.
        "TE.CL": (start + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + one_chunk,
        # An obfuscated Transfer-Encoding one side ignores.
        "TE.TE": (start + f"Content-Length: {len(empty_chunked)}\r\nTransfer-Encoding: chunked\r\n"
                  "Transfer-Encoding: x\r\n\r\n").encode() + empty_chunked,
    }


@pytest.mark.parametrize("attempt", ["CL.TE", "TE.CL", "TE.TE"])
async def test_a_request_with_ambiguous_framing_smuggles_no_request(hub: HubClient, attempt: str) -> None:
    handle = unique_handle("smuggle")
    payload = _smuggling_attempts(hub.server.port, _hidden_request(hub.server.port, handle))[attempt]
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", hub.server.port) as stream:
            await stream.send(payload)
            received = b""
            try:
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    assert received.count(b"HTTP/1.1 ") <= 1, f"the hub answered a second request: {received!r}"
    await assert_handle_free(hub, handle)


async def test_a_pipelined_second_request_is_served_so_the_smuggling_test_would_see_one(hub: HubClient) -> None:
    """The control of the test above: the same hidden request, sent openly after a first one, does run."""
    handle = unique_handle("pipelined")
    first = json.dumps(request("no.such")).encode()
    head = (f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:{hub.server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(first)}\r\n\r\n").encode()
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", hub.server.port) as stream:
            await stream.send(head + first + _hidden_request(hub.server.port, handle))
            received = b""
            while received.count(b"HTTP/1.1 ") < 2 or not received.rstrip().endswith(b"}"):
                received += await stream.receive()
    found = await hub.call("agents.get", {"agent": handle}, token=hub.admin_key)
    assert found["handle"] == handle


async def test_a_body_that_is_not_declared_json_is_refused_with_415(hub: HubClient) -> None:
    handle = unique_handle("media")
    body = json.dumps(register(handle))
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/jsonx", None]:
        headers = {"content-type": content_type} if content_type else {}
        response = await hub.http.post(RPC, content=body, headers=headers)
        if content_type is None:
            assert "content-type" not in response.request.headers
        _transport_error(response, 415, "unsupported_media_type")
    await assert_handle_free(hub, handle)


async def test_json_media_types_with_parameters_or_suffixes_are_accepted(hub: HubClient) -> None:
    for content_type in ["application/json; charset=utf-8", "Application/JSON", "application/vnd.parley+json"]:
        handle = unique_handle("media-ok")
        response = await hub.http.post(RPC, content=json.dumps(register(handle)),
                                       headers={"content-type": content_type})
        assert response.json()["result"]["handle"] == handle, content_type


async def test_a_refused_credential_is_401_with_www_authenticate_and_runs_nothing(hub: HubClient) -> None:
    agent = await hub.register("authz")
    key = await hub.api_key(agent)
    forged_key = key[:-8] + ("A" if key[-8] != "A" else "B") + key[-7:]
    handle = unique_handle("refused")
    body = json.dumps(register(handle))
    for authorization in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Token " + agent.access_token,
        "Bearer not-a-token",
        "Bearer " + agent.access_token[:-4] + "AAAA",
        "Bearer " + forged_key,
        "Bearer prl_abc_def",
        "Bearer " + agent.refresh_token,
        "Bearer " + agent.recovery_key,
    ]:
        response = await post_raw(hub, body, {"authorization": authorization})
        _transport_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].lower().startswith("bearer"), authorization
    response = await post_raw(hub, body, {"x-api-key": forged_key})
    _transport_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    await assert_handle_free(hub, handle)


async def test_a_revoked_api_key_is_refused_with_401(hub: HubClient) -> None:
    agent = await hub.register("revoked")
    created = await hub.call("keys.create", {"name": "short-lived"}, token=agent.access_token)
    await hub.call("keys.revoke", {"key_id": created["key"]["key_id"]}, token=agent.access_token)
    response = await post_raw(hub, json.dumps(request("auth.whoami")),
                              {"authorization": f"Bearer {created['api_key']}"})
    _transport_error(response, 401, "unauthorized")


async def test_an_api_key_works_as_bearer_and_as_x_api_key(hub: HubClient) -> None:
    agent = await hub.register("keyed")
    key = await hub.api_key(agent)
    for headers in ({"authorization": f"Bearer {key}"}, {"authorization": f"bearer {key}"}, {"x-api-key": key}):
        body = (await post_raw(hub, json.dumps(request("auth.whoami")), headers)).json()
        assert body["result"]["agent"]["agent_id"] == agent.agent_id
        assert body["result"]["credential"]["kind"] == "api_key"


async def test_a_long_poll_ends_on_the_hub_when_its_client_goes_away(start_hub: ServerFactory) -> None:
    """A client that gives up on a 25 s `events.list` wait (closing its connection) frees the hub at
    once: the hub cancels the call (outcome `cancelled` in /metrics) instead of waiting it out.
    A hub of its own, so its only `events.list` is this one."""
    async with HubClient(start_hub()) as hub:
        agent = await hub.register("poller")
        async with httpx.AsyncClient(base_url=hub.server.url) as client:
            with anyio.move_on_after(1.0):  # long enough for the hub to be waiting; then the client leaves
                await client.post(RPC, json=request("events.list", {"timeout": 25}),
                                  headers={"authorization": f"Bearer {agent.access_token}"}, timeout=30)
        with anyio.fail_after(WAIT):
            while await events_list_count(hub.http, "cancelled") == 0:  # noqa: ASYNC110 - polls /metrics
                await anyio.sleep(0.02)
        assert await events_list_count(hub.http) == 1, "the long poll ended some other way too"


async def test_get_on_rpc_is_405(hub: HubClient) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await hub.http.request(method, RPC)
        assert response.status_code == 405, method
        assert response.headers["allow"] == "POST"
        assert response.json()["error"]["code"] == "method_not_allowed"


# -- health and readiness ---------------------------------------------------------------------------


async def test_health_reports_status_version_and_a_growing_uptime(hub: HubClient) -> None:
    first = (await hub.http.get("/health")).json()
    assert first["status"] == "ok"
    assert isinstance(first["version"], str) and first["version"]
    assert isinstance(first["uptime_seconds"], (int, float)) and first["uptime_seconds"] >= 0
    with anyio.fail_after(10):
        while (second := (await hub.http.get("/health")).json())["uptime_seconds"] <= first["uptime_seconds"]:
            await anyio.sleep(0.01)
    assert second["status"] == "ok"


async def test_ready_is_200_when_the_store_answers(hub: HubClient) -> None:
    response = await hub.http.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


@postgres_only
async def test_ready_is_503_while_the_store_does_not_answer_and_200_again_when_it_does(
    tmp_path: Path, anyio_backend: str, store_kind: str
) -> None:
    server = make_server(anyio_backend, store_kind, tmp_path)
    host, port = server.database_url.split("@", 1)[1].split("/", 1)[0].split(":")
    with TcpProxy(host, int(port)) as database:
        server.env["PARLEY_DATABASE_URL"] = server.database_url.replace(f"{host}:{port}", f"127.0.0.1:{database.port}")
        await anyio.to_thread.run_sync(server.launch)
        try:
            async with HubClient(server) as hub:
                assert (await hub.http.get("/ready")).status_code == 200
                database.cut()
                down = await hub.http.get("/ready")
                assert down.status_code == 503 and down.json()["status"] == "unavailable"
                assert (await hub.http.get("/health")).status_code == 200  # alive, only not ready
                database.restore()
                with anyio.fail_after(WAIT):
                    while (await hub.http.get("/ready")).status_code != 200:
                        await anyio.sleep(0.1)
        finally:
            await anyio.to_thread.run_sync(server.stop)
            drop_postgres_database(server.database_url)
