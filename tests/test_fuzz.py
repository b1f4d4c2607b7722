"""No input gets a 5xx: hostile JSON at every edge of a real hub.

A deterministic generator (seeded, so a failure replays) puts values that have broken JSON servers
into every field of every operation, the JSON-RPC envelope included: strings with lone UTF-16
surrogates (`"\\ud800"`, which cannot be encoded back into a response), NUL characters (which
PostgreSQL cannot store), numbers past a float's range or Python's digit limit, `NaN` and `Infinity`,
and nesting from just past the limit to 100,000 levels. They go to `/rpc` (single and in batches),
to every REST route (path, query string and body), over a WebSocket, to the SSE stream and to `/mcp`.
Each must get a 4xx or a JSON-RPC error, never a 5xx, `internal`, or a dropped connection.
"""

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx
from wsproto.events import BytesMessage

from bridges.rest import BODY_METHODS
from hub.operations import OPERATIONS, Operation

from .client import Agent, HubClient, RpcSocket

SEED: Final = 15
INTERNAL: Final = -32603
SKIPPED: Final = {"auth.logout"}
"""Ending the fuzzing agent's own session would turn every later call into a 401 before validation."""


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: what `json.dumps` will not write (1e999, NaN, a huge nesting)."""

    text: str


def nested(depth: int, leaf: str = "1") -> Raw:
    return Raw("[" * depth + leaf + "]" * depth)


def nested_objects(depth: int) -> Raw:
    return Raw('{"a":' * depth + "1" + "}" * depth)


TEXT_LEVEL: Final[list[Any]] = [
    "\ud800", "a\udfffb", "\udc00\ud800", "\x00", "nul\x00inside", "x" * 70_000, "", " ", "\u202e\ufeff",
    "😀", "'; DROP TABLE agents; --", "NEAR \"x", "../../etc/passwd", "%00", "\r\n",
]
"""Strings: lone surrogates, NULs, huge, empty, and the usual suspects."""

NUMBERS: Final[list[Any]] = [
    10**4000, -(10**4000), 2**63, -(2**63) - 1, 2**64, -0.0, 1e308, 5e-324, Raw("1e999"), Raw("-1e999"),
    Raw("1" + "0" * 5000), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), True, None,
]
"""Numbers past every bound: over 64 bits, past a float, past Python's 4300-digit limit; JSON's non-numbers."""

SHAPES: Final[list[Any]] = [
    {}, [], [[]], {"\ud800": 1}, {"": None}, {"a\x00": "b"}, ["\ud800"], nested(31), nested(33), nested(1000),
    nested(100_000), nested_objects(40), nested_objects(5000), ["a"] * 1000,
]
"""Containers: empty, keyed by a lone surrogate or a NUL, nested just past the limit and far past it."""

VALUES: Final[list[Any]] = TEXT_LEVEL + NUMBERS + SHAPES


def dumps(value: Any) -> str:
    """JSON text for `value`, with `Raw` written verbatim and lone surrogates as `\\uXXXX` escapes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate becomes its escape


def as_text(value: Any) -> str:
    """A value as a path segment or query value would carry it (within what an HTTP client sends)."""
    return (value if isinstance(value, str) else dumps(value))[:9000]


def fuzz_cases(rng: random.Random, per_operation: int = len(VALUES)) -> Iterator[tuple[Operation, str, Any]]:
    """For each operation: `per_operation` of the values, each in one of its fields; and each field once."""
    for name, op in sorted(OPERATIONS.items()):
        if name in SKIPPED:
            continue
        fields = list(op.params.model_fields) or ["no_such_field"]
        for value in rng.sample(VALUES, per_operation):
            yield op, rng.choice(fields), value
        for field in fields:
            yield op, field, rng.choice(VALUES)


def refused_whole(value: Any) -> bool:
    """Whether a payload holding `value` is refused before JSON-RPC (not JSON the hub reads, or too deep)."""
    return isinstance(value, Raw) or re.search(r"\\u[dD][89a-fA-F]", dumps(value)) is not None


def rpc_request(op: Operation, field: str, value: Any, request_id: Any) -> str:
    return (f'{{"jsonrpc":"2.0","id":{dumps(request_id)},"method":{json.dumps(op.name)},'
            f'"params":{{{json.dumps(field)}:{dumps(value)}}}}}')


ENVELOPES: Final[list[str]] = [
    '{"jsonrpc":"2.0","id":"\\ud800","method":"auth.whoami"}',
    '{"jsonrpc":"2.0","id":"\\udfff\\ud800","method":"auth.whoami","params":{}}',
    '{"jsonrpc":"2.0","id":"\\u0000","method":"auth.whoami"}',
    '{"jsonrpc":"2.0","id":1e999,"method":"auth.whoami"}',
    '{"jsonrpc":"2.0","id":NaN,"method":"auth.whoami"}',
    '{"jsonrpc":"2.0","id":' + "9" * 4000 + ',"method":"auth.whoami"}',
    '{"jsonrpc":"2.0","id":' + "9" * 5000 + ',"method":"auth.whoami"}',
    '{"jsonrpc":"2.0","id":-0.0,"method":"auth.whoami"}',
    '{"jsonrpc":"2.0","id":1,"method":"\\ud800"}',
    '{"jsonrpc":"2.0","id":1,"method":"auth.whoami\\u0000"}',
    '{"jsonrpc":"\\ud800","id":1,"method":"auth.whoami"}',
    '{"jsonrpc":"2.0","id":1,"method":"auth.whoami","\\ud800":1}',
    '{"jsonrpc":"2.0","id":1,"method":"auth.whoami","params":' + "[" * 40 + "]" * 40 + "}",
    '[{"jsonrpc":"2.0","id":"\\ud800","method":"auth.whoami"},{"jsonrpc":"2.0","id":2,"method":"auth.whoami"}]',
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 100_000 + "1" + "}" * 100_000,
    '"\\ud800"', "NaN", "1e999", "[]", "null", '{"jsonrpc":"2.0","id":1,"method":"auth.whoami"}\x00',
    '{"jsonrpc":"2.0","id":1,"method":"auth.whoami","params":{"x":"a\x00b"}}',
]
"""Hostile envelopes: bad ids, methods and members, and whole payloads that are not JSON the hub reads."""


def check_rpc_answer(answer: Any, sent: str) -> None:
    items = answer if isinstance(answer, list) else [answer]
    for item in items:
        assert isinstance(item, dict) and item.get("jsonrpc") == "2.0", (sent[:300], item)
        if "error" in item:
            assert item["error"]["code"] != INTERNAL, (sent[:300], item)
            assert item["error"]["data"]["code"] != "internal", (sent[:300], item)


async def post_rpc(hub: HubClient, agent: Agent, payload: str | bytes) -> httpx.Response:
    return await hub.http.post("/rpc", content=payload if isinstance(payload, bytes) else payload.encode(),
                               headers={"content-type": "application/json",
                                        "authorization": f"Bearer {agent.access_token}"})


async def test_no_json_rpc_request_over_http_gets_a_server_error(hub: HubClient) -> None:
    agent = await hub.register("fuzz-rpc")
    rng = random.Random(SEED)
    payloads = list(ENVELOPES)
    batch: list[str] = []
    for op, field, value in fuzz_cases(rng):
        request = rpc_request(op, field, value, rng.choice([1, "x", None, 2**70]))
        if refused_whole(value):
            if rng.random() < 0.2:  # alone, so a batch's other requests still reach their operations
                payloads.append(request)
        else:
            batch.append(request)
        if len(batch) == 50:
            payloads.append("[" + ",".join(batch) + "]")
            batch = []
    payloads.append("[" + ",".join(batch) + "]")
    answered = 0
    for payload in payloads:
        response = await post_rpc(hub, agent, payload)
        assert response.status_code < 500, (payload[:300], response.status_code, response.text[:300])
        if response.status_code == 200:
            check_rpc_answer(response.json(), payload)
            answered += 1
    assert answered > 300
    assert (await hub.call("auth.whoami", token=agent.access_token))["agent"]["agent_id"] == agent.agent_id


async def test_invalid_utf8_and_stray_bytes_on_rpc_are_parse_errors(hub: HubClient) -> None:
    agent = await hub.register("fuzz-bytes")
    for payload in [b'{"jsonrpc":"2.0","id":"\xff","method":"auth.whoami"}', b'{"id":"\xed\xa0\x80"}',
                    b"\xfe\xff\x00{", b'{"jsonrpc":"2.0","id":1,"method":"auth.whoami"}\x00']:
        response = await post_rpc(hub, agent, payload)
        assert response.status_code == 200, response.text
        assert response.json()["error"]["code"] == -32700, response.text


def rest_calls(rng: random.Random) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, URL, httpx arguments) for each route with hostile values in its path, query and body."""
    for op, field, value in fuzz_cases(rng, per_operation=12):
        path = op.http_path
        for name in re.findall(r"{(\w+)}", op.http_path):
            segment = as_text(value) if name == field else "x"
            path = path.replace("{" + name + "}", quote(segment.encode("utf-8", "surrogatepass"), safe=""))
        if op.http_method in BODY_METHODS:
            yield op.http_method, path, {"content": dumps({field: value}).encode(),
                                         "headers": {"content-type": "application/json"}}
        else:
            query = quote(field) + "=" + quote(as_text(value).encode("utf-8", "surrogatepass"), safe="")
            yield op.http_method, f"{path}?{query}", {}


async def test_no_rest_request_gets_a_server_error(hub: HubClient) -> None:
    agent = await hub.register("fuzz-rest")
    auth = {"authorization": f"Bearer {agent.access_token}"}
    refused = 0
    for method, url, arguments in rest_calls(random.Random(SEED)):
        headers = {**auth, **arguments.pop("headers", {})}
        response = await hub.http.request(method, url, headers=headers, **arguments)
        assert response.status_code < 500, (method, url[:200], arguments.get("content", b"")[:200], response.text)
        if response.status_code >= 400:
            assert response.json()["error"]["code"] != "internal", response.text
            refused += 1
    assert refused > 500
    for body in ['{"description": "\\ud800"}', '{"metadata": {"x": NaN}}', '{"metadata": {"x": 1e999}}',
                 '{"metadata": ' + "[" * 900 + "]" * 900 + "}", "[" * 100_000, '{"\\udc00": 1}', '"\\ud800"']:
        response = await hub.http.patch("/api/agents/me", content=body.encode(),
                                        headers={**auth, "content-type": "application/json"})
        assert response.status_code == 400, (body[:100], response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    assert (await hub.http.get("/api/auth/me", headers=auth)).json()["agent"]["metadata"] == {}


async def test_hostile_uploads_and_stream_cursors_get_no_server_error(hub: HubClient) -> None:
    agent = await hub.register("fuzz-edges")
    auth = {"authorization": f"Bearer {agent.access_token}"}
    boundary = "fuzzboundary"
    for name, field in [(b"\xff\xfe.txt", b"x"), (b"a\x00b.txt", b"x"), (b"ok.txt", b"\xed\xa0\x80"),
                        (b"ok.txt", b"nul\x00")]:
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n".encode() + field
                + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"".encode() + name
                + f"\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n".encode())
        response = await hub.http.post("/api/files", content=body,
                                       headers={**auth, "content-type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code < 500, (name, field, response.text)
    for cursor in ["\ud800", "1e999", "9" * 5000, "-1", "NaN", "\x00"]:
        encoded = cursor.encode("utf-8", "surrogatepass")
        async with hub.http.stream("GET", f"/api/events/stream?after={quote(encoded, safe='')}", headers=auth) as r:
            assert r.status_code < 500, (cursor, r.status_code)
        if cursor.isprintable():
            async with hub.http.stream("GET", "/api/events/stream", headers={**auth, "last-event-id": cursor}) as r:
                assert r.status_code < 500, (cursor, r.status_code)


async def test_no_websocket_frame_gets_an_internal_error_or_drops_the_connection(hub: HubClient) -> None:
    agent = await hub.register("fuzz-ws")
    rng = random.Random(SEED)
    frames = list(ENVELOPES) + [rpc_request(op, field, value, 7)
                                for op, field, value in fuzz_cases(rng, per_operation=8)]
    async with await RpcSocket.open(hub.server, agent.access_token) as socket:
        answered = 0
        for frame in frames:  # every frame has an id, or is refused whole: each gets one answer
            await socket.send(frame)
            check_rpc_answer(await socket.receive(), frame)
            answered += 1
        # A binary frame that is not UTF-8 (a text frame must be: the client library refuses to send one).
        connection = socket.connection
        await connection._send_bytes(connection._protocol.send(BytesMessage(b'{"jsonrpc":"2.0","id":"\xff"}')))
        assert (await socket.receive())["error"]["code"] == -32700
        assert (await socket.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id  # still open
    assert answered > 200


async def test_hostile_mcp_requests_get_no_server_error(hub: HubClient) -> None:
    agent = await hub.register("fuzz-mcp")
    headers = {"authorization": f"Bearer {agent.access_token}", "content-type": "application/json",
               "accept": "application/json, text/event-stream"}
    for payload in ENVELOPES[:13] + ['{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
                                     '{"name":"send_message","arguments":{"text":"\\ud800","to":"x"}}}']:
        response = await hub.http.post("/mcp", content=payload.encode(), headers=headers)
        assert response.status_code < 500, (payload[:200], response.text[:300])
