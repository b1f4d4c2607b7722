"""The benchmarks' floor servers start and answer on both backends.

Every ratio in `bench/RESULTS.md` divides by a floor, and the floors are served through the runner's
`serve_app`, as the hub is. Only `make bench` starts them otherwise, so a change to the runner that
breaks them (it happened once) would go unnoticed until the next benchmark run.
"""

import httpx
import pytest

from bench.floors import FloorServer
from bench.http_floors import floor_process

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@BACKENDS
def test_the_websocket_floor_serves(backend: str) -> None:
    with FloorServer(backend) as floor:
        assert httpx.get(f"http://127.0.0.1:{floor.port}/health", timeout=5).status_code == 200
    assert floor.process is not None and floor.process.returncode == 0


@BACKENDS
def test_the_rest_floor_answers_its_canned_documents(backend: str) -> None:
    canned = {"get": {"items": [1, 2]}, "post": {"seq": 7}}
    with floor_process("rest", backend, canned) as (port, _):
        url = f"http://127.0.0.1:{port}/api/conversations/c1/messages"
        assert httpx.get(url, timeout=5).json() == canned["get"]
        posted = httpx.post(url, json={"text": "hi"}, timeout=5)
        assert (posted.status_code, posted.json()) == (201, canned["post"])


@BACKENDS
def test_the_mcp_floor_opens_a_session(backend: str) -> None:
    with floor_process("mcp", backend) as (port, _):
        answer = httpx.post(
            f"http://127.0.0.1:{port}/mcp",
            headers={"Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "floor-test", "version": "1"}}},
            timeout=5,
        )
        assert answer.status_code == 200
        assert answer.headers.get("mcp-session-id")
        assert '"serverInfo"' in answer.text
