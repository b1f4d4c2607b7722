"""MCP over streamable HTTP (issue #6, scenario 4): `send_message` and `read_messages` tool calls/s and p50/p99
against the hub's `/mcp`, with several concurrent sessions, beside an `echo` tool on the same SDK stack as
floor, measured in the same run (interleaved rounds). Targets, judged on throughput: issue 16's
(performance round 3), send_message >= 0.60 x echo calls/s and read_messages >= 0.40 x (issue #6 had
asked 0.8 x for both; round 3 measured what the SDK stack itself costs and set these). The p99 ratio is
reported but not judged, because the asyncio echo floor's own tail swings from 90 to 190 ms.

    .venv/bin/python -m bench.mcp [--backend asyncio|trio|both] [--quick] [--sessions 8] [--seconds 6]

The floor (`bench.http_floors.mcp_floor_app`) is a minimal `MCPServer` with one `echo` tool, mounted the
way `mcp_tools/http.py` mounts the hub's: the SDK's `StreamableHTTPSessionManager` with stateful sessions,
SSE responses and the same DNS-rebinding settings, under the hub's own server code (uvicorn + uvloop on
asyncio, hypercorn on trio). So the ratio is what the hub adds: bearer auth on every request (the SDK's
auth middleware asking the hub), the tool's own credential check, the operations it runs (send: one
group-committed write; read: `conversations.get` + `messages.list`) and the shaping of results.

The client sends raw JSON-RPC POSTs with the session id (protocol 2025-11-25, what the Inspector and most
clients negotiate today), the same way to the hub and to the floor: the SDK's own client spends ~1.5 ms of
CPU per call (measured against the echo floor, one session), more than the echo server itself (~1 ms), so
on this 2-core machine it would be the bottleneck; `RawHttp` spends ~0.25 ms. Each session is one
keep-alive connection. Where the limit was (2026-11-22): every run server-bound (server ~1.0 core, client
0.1-0.2 core; `server_cores`/`client_cores` in the JSON).
"""

import argparse
import itertools
import json
from collections.abc import Callable
from typing import Any, Final

from bench.clients import running_hub
from bench.http_floors import (
    RawHttp,
    Sample,
    drive,
    expect,
    floor_process,
    interleaved,
    register,
    rpc,
    run_client,
)
from bench.report import Figure, add_common_options, add_load_options, backends, emit, load_plan
from tests.servers import HubServer

PROTOCOL: Final = "2025-11-25"
TEXT: Final = "status update: the nightly benchmark finished, all targets met, details in the attached report."
CONVERSATIONS: Final = 4
READ_LIMIT: Final = 20
TARGETS: Final = {"send_message": 0.60, "read_messages": 0.40}
"""Each tool's calls/s as a share of the echo tool's (issue 16)."""
HEADERS: Final = (("accept", "application/json, text/event-stream"), ("content-type", "application/json"))


def sse_message(body: bytes) -> dict[str, Any]:
    """The JSON-RPC response in an SSE body (the last `data:` line; notifications may come before it)."""
    data = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
    if not data:
        raise RuntimeError(f"no SSE data in {body[:300]!r}")
    return json.loads(data[-1])  # type: ignore[no-any-return]


class Sessions:
    """One MCP session per connection, opened on its first call (initialize + initialized), with the
    credential of its turn: sessions are bound to the agent that opened them."""

    def __init__(self, credentials: list[str | None]) -> None:
        self._credentials = itertools.cycle(credentials)
        self._headers: dict[int, list[tuple[str, str]]] = {}
        self._ids = itertools.count(1)

    async def headers(self, conn: RawHttp) -> list[tuple[str, str]]:
        if id(conn) not in self._headers:
            self._headers[id(conn)] = await self._open(conn, next(self._credentials))
        return self._headers[id(conn)]

    async def _open(self, conn: RawHttp, credential: str | None) -> list[tuple[str, str]]:
        headers = list(HEADERS) + ([("authorization", f"Bearer {credential}")] if credential else [])
        initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                      "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                                 "clientInfo": {"name": "bench", "version": "0"}}}
        status, answer_headers, body = await conn.request("POST", "/mcp", headers, json.dumps(initialize).encode())
        expect(status, body)
        headers += [("mcp-session-id", answer_headers[b"mcp-session-id"].decode()),
                    ("mcp-protocol-version", PROTOCOL)]
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        status, _, body = await conn.request("POST", "/mcp", headers, json.dumps(initialized).encode())
        expect(status, body, 202)
        return headers

    def tool_call(self, name: str, arguments: Callable[[int], dict[str, Any]]) -> Callable[[RawHttp, int], Any]:
        """A request that calls tool `name`; an error result fails the run."""
        async def request(conn: RawHttp, n: int) -> None:
            call = {"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/call",
                    "params": {"name": name, "arguments": arguments(n)}}
            status, _, body = await conn.request("POST", "/mcp", await self.headers(conn), json.dumps(call).encode())
            result = sse_message(expect(status, body)).get("result")
            if result is None or result.get("isError"):
                raise RuntimeError(f"{name} failed: {body[:300]!r}")
        return request


def set_up(hub: HubServer) -> tuple[list[str | None], list[str]]:
    """Two agents (their API keys) and the group conversations the sessions write into, with history."""
    alice, bob = register(hub, "mcp-alice"), register(hub, "mcp-bob")
    ids = [rpc(hub, "conversations.create_group", {"title": f"mcp {i}", "members": [bob.agent_id]},
               alice.api_key)["conversation_id"] for i in range(CONVERSATIONS)]
    for conversation_id in ids:
        for _ in range(READ_LIMIT):
            rpc(hub, "messages.send", {"conversation_id": conversation_id, "body": TEXT}, alice.api_key)
    return [alice.api_key, bob.api_key], ids


def hub_calls(sessions: Sessions, ids: list[str]) -> dict[str, Callable[[RawHttp, int], Any]]:
    """The measured tool calls, by tool: each send and read goes to the next of the conversations `ids`."""
    return {
        "send_message": sessions.tool_call("send_message", lambda n: {"conversation": ids[n % len(ids)], "text": TEXT}),
        "read_messages": sessions.tool_call("read_messages", lambda n: {"conversation": ids[n % len(ids)],
                                                                         "unread_only": False, "limit": READ_LIMIT}),
    }


def echo_call() -> Callable[[RawHttp, int], Any]:
    """The floor's call: the echo tool, in a session without a credential."""
    return Sessions([None]).tool_call("echo", lambda n: {"text": TEXT})


def measure(backend: str, sessions: int, seconds: float, rounds: int) -> dict[str, Sample]:
    with running_hub(backend) as hub, floor_process("mcp", backend) as (floor_port, floor_pid):
        keys, ids = set_up(hub)
        assert hub.process is not None
        hub_pid = hub.process.pid
        calls = hub_calls(Sessions(keys), ids)

        def run(port: int, pid: int, request: Callable[[RawHttp, int], Any]) -> Callable[[], Any]:
            return lambda: drive(port, pid, request, concurrency=sessions, seconds=seconds / rounds)

        variants = {"echo": run(floor_port, floor_pid, echo_call()),
                    **{tool: run(hub.port, hub_pid, call) for tool, call in calls.items()}}

        async def main() -> dict[str, Sample]:
            return await interleaved(variants, rounds)

        return run_client(main)


def figures(backend: str, samples: dict[str, Sample], sessions: int) -> list[Figure]:
    floor = samples["echo"]
    out = [Figure("mcp", "echo tool calls/s (floor)", floor.rate, "calls/s", backend,
                  details={"sessions": sessions, "p50_ms": floor.ms(0.5), "p99_ms": floor.ms(0.99), **floor.cpu()})]
    for tool in ("send_message", "read_messages"):
        sample = samples[tool]
        met = sample.rate >= TARGETS[tool] * floor.rate
        details = {"sessions": sessions, "calls": len(sample.latencies), "hub": sample.cpu(), "floor": floor.cpu()}
        out += [
            Figure("mcp", f"{tool} calls/s", sample.rate, "calls/s", backend, floor=floor.rate, floor_name="echo",
                   target=f">= {TARGETS[tool]:.2f}x echo calls/s", met=met if backend == "asyncio" else None,
                   details=details),
            Figure("mcp", f"{tool} p50", sample.ms(0.5), "ms", backend, floor=floor.ms(0.5), floor_name="echo"),
            Figure("mcp", f"{tool} p99", sample.ms(0.99), "ms", backend, floor=floor.ms(0.99), floor_name="echo"),
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser)
    add_load_options(parser)
    parser.add_argument("--sessions", type=int, default=8, help="concurrent MCP sessions (one connection each)")
    args = parser.parse_args()
    seconds, rounds = load_plan(args)
    all_figures: list[Figure] = []
    for backend in backends(args.backend):
        all_figures += figures(backend, measure(backend, args.sessions, seconds, rounds), args.sessions)
    emit(all_figures, json_path=args.json_path)


if __name__ == "__main__":
    main()
