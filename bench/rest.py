"""REST (issue #6, scenario 5): `POST /api/conversations/{id}/messages` and `GET …/messages` requests/s and
p50/p99, with concurrent keep-alive clients, against a bare Starlette JSON route on the same server stack
as floor, measured in the same run (interleaved rounds).

    .venv/bin/python -m bench.rest [--backend asyncio|trio|both] [--quick] [--concurrency 8] [--seconds 6]

The floor (`bench.http_floors.rest_floor_app`) serves the same paths with the hub's server code
(`bridges.runner`: uvicorn + uvloop on asyncio, hypercorn on trio), reads and parses the same JSON
body, and answers a canned copy of the hub's own answer, so both sides move the same bytes; what the
ratio shows is everything the hub adds: auth (the API key is checked on every request), validation,
the store (group-committed write, or a read in a worker thread), the event fan-out and the models.

Each POST goes to one of 4 conversations (two agents, API-key auth), with a ~100-byte body; the GET
is the latest page of 50 messages. `server_cores`/`client_cores` in the JSON say which side was busy:
the client is one asyncio process on the other core (see `bench.http_floors`). Where the limit was
(2026-11-22): the hub runs are server-bound (~1.0 core, client ~0.1); the asyncio floor's POST is
client-bound (client 0.99 core at ~12k req/s), so that floor is a lower bound and its ratio an upper one.
"""

import argparse
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
    json_headers,
    register,
    rpc,
    run_client,
)
from bench.report import Figure, add_common_options, add_load_options, backends, emit, load_plan
from tests.servers import HubServer

CONVERSATIONS: Final = 4
PAGE: Final = 50
BODY: Final = "status update: the nightly benchmark finished, all targets met, details in the attached report."


def path(conversation_id: str) -> str:
    return f"/api/conversations/{conversation_id}/messages"


def post_request(headers: list[tuple[str, str]], conversation_ids: list[str]) -> Callable[[RawHttp, int], Any]:
    body = json.dumps({"body": BODY}).encode()

    async def request(conn: RawHttp, n: int) -> None:
        status, _, answer = await conn.request("POST", path(conversation_ids[n % len(conversation_ids)]), headers,
                                               body)
        expect(status, answer, 201)

    return request


def get_request(headers: list[tuple[str, str]], conversation_id: str) -> Callable[[RawHttp, int], Any]:
    target = f"{path(conversation_id)}?limit={PAGE}"

    async def request(conn: RawHttp, n: int) -> None:
        expect(*(await conn.request("GET", target, headers))[::2])

    return request


def set_up(hub: HubServer) -> tuple[str, list[str], dict[str, Any]]:
    """Two agents and 4 direct-or-group conversations with a page of history; the hub's answers to copy."""
    alice, bob = register(hub, "rest-alice"), register(hub, "rest-bob")
    ids = [rpc(hub, "conversations.create_group", {"title": f"rest {i}", "members": [bob.agent_id]},
               alice.api_key)["conversation_id"] for i in range(CONVERSATIONS)]
    sent = {}
    for conversation_id in ids:
        for _ in range(PAGE):
            sent = rpc(hub, "messages.send", {"conversation_id": conversation_id, "body": BODY}, alice.api_key)
    page = rpc(hub, "messages.list", {"conversation_id": ids[0], "limit": PAGE}, alice.api_key)
    return alice.api_key, ids, {"post": sent, "get": page}


def measure(backend: str, concurrency: int, seconds: float, rounds: int) -> dict[str, Sample]:
    with running_hub(backend) as hub:
        key, ids, canned = set_up(hub)
        headers = json_headers(key)
        assert hub.process is not None
        hub_pid = hub.process.pid
        with floor_process("rest", backend, canned) as (floor_port, floor_pid):
            def run(port: int, pid: int, request: Callable[[RawHttp, int], Any]) -> Callable[[], Any]:
                return lambda: drive(port, pid, request, concurrency=concurrency, seconds=seconds / rounds)

            variants = {
                "POST floor": run(floor_port, floor_pid, post_request(headers, ids)),
                "POST hub": run(hub.port, hub_pid, post_request(headers, ids)),
                "GET floor": run(floor_port, floor_pid, get_request(headers, ids[0])),
                "GET hub": run(hub.port, hub_pid, get_request(headers, ids[0])),
            }

            async def main() -> dict[str, Sample]:
                return await interleaved(variants, rounds)

            return run_client(main)


def figures(backend: str, samples: dict[str, Sample], concurrency: int) -> list[Figure]:
    out = []
    for verb in ("POST", "GET"):
        hub, floor = samples[f"{verb} hub"], samples[f"{verb} floor"]
        details = {"concurrency": concurrency, "requests": len(hub.latencies), "hub": hub.cpu(),
                   "floor": floor.cpu(), "floor_p50_ms": round(floor.ms(0.5), 3),
                   "floor_p99_ms": round(floor.ms(0.99), 3)}
        route = f"{verb} /api/conversations/{{id}}/messages"
        out += [
            Figure("rest", f"{route} req/s", hub.rate, "req/s", backend, floor=floor.rate,
                   floor_name="bare Starlette", details=details),
            Figure("rest", f"{route} p50", hub.ms(0.5), "ms", backend, floor=floor.ms(0.5),
                   floor_name="bare Starlette"),
            Figure("rest", f"{route} p99", hub.ms(0.99), "ms", backend, floor=floor.ms(0.99),
                   floor_name="bare Starlette"),
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser)
    add_load_options(parser)
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    args = parser.parse_args()
    seconds, rounds = load_plan(args)
    all_figures: list[Figure] = []
    for backend in backends(args.backend):
        all_figures += figures(backend, measure(backend, args.concurrency, seconds, rounds), args.concurrency)
    emit(all_figures, json_path=args.json_path)


if __name__ == "__main__":
    main()
