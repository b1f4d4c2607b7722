"""Graceful shutdown of a real `parley serve`: SIGTERM with work in flight, bounded, clean, durable."""

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from bridges.client._websocket import ConnectionClosed
from bridges.ws_rpc import GOING_AWAY_REASON

from .client import HubClient, RpcError, RpcSocket, unique_handle
from .conftest import diagonal, sqlite_only
from .servers import HubServer

EXIT_WITHIN = 10.0
"""Seconds a hub may take to exit after SIGTERM (it allows its connections 3 s to finish)."""


def _processes() -> dict[int, tuple[int, str, str]]:
    """Every process: pid -> (parent pid, state, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it exited while we looked
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        found[int(entry.name)] = (int(ppid), state, cmdline)
    return found


def descendants(pid: int) -> set[int]:
    processes = _processes()
    family, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (ppid, _, _) in processes.items() if ppid in frontier} - family
        family |= frontier
    return family


def living(pids: set[int]) -> set[int]:
    return {pid for pid, (_, state, _) in _processes().items() if pid in pids and state != "Z"}


def serving_on(port: int) -> set[int]:
    """Processes whose command line says they serve on `port`."""
    return {pid for pid, (_, state, cmdline) in _processes().items()
            if state != "Z" and " serve " in cmdline and f"--port {port}" in cmdline}


async def sigterm_and_wait(server: HubServer) -> tuple[int, float]:
    """SIGTERM the hub; its exit code and how long it took (fails if it outlives EXIT_WITHIN)."""
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        code = await anyio.to_thread.run_sync(server.process.wait, EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the hub did not exit within {EXIT_WITHIN}s of SIGTERM:\n{server.log()}") from None
    return code, time.monotonic() - started


def request(method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        body["params"] = params
    return body


@diagonal  # its own hub, stopped: each loop and each store once
async def test_sigterm_with_requests_in_flight_exits_0_leaves_no_process_and_keeps_acknowledged_writes(
    start_hub: Any,
) -> None:
    server: HubServer = start_hub()
    assert server.process is not None
    acknowledged: list[str] = []
    async with HubClient(server) as client:
        for _ in range(3):
            acknowledged.append((await client.register("durable-http")).handle)
        agent = await client.register("durable-ws")
        acknowledged.append(agent.handle)
    ws = await RpcSocket.open(server, agent.access_token)
    try:
        for i in range(60):  # registrations hash with argon2: the hub works through them for a while
            await ws.send(request("auth.register", {"handle": unique_handle("in-flight")}, i))
        with anyio.fail_after(30):
            for _ in range(3):  # these are answered; the rest are queued or running
                acknowledged.append((await ws.receive())["result"]["handle"])
        family = descendants(server.process.pid) | {server.process.pid}
        code, took = await sigterm_and_wait(server)
        assert code == 0, server.log()
        assert took < EXIT_WITHIN
        # Whatever else was answered before the connection went down was acknowledged too.
        with pytest.raises(ConnectionClosed), anyio.fail_after(10):
            while True:
                answer = json.loads(await ws.connection.receive())
                if "result" in answer:
                    acknowledged.append(answer["result"]["handle"])
    finally:
        await ws.connection.close()
    assert living(family) == set()
    assert serving_on(server.port) == set()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass

    server.launch()  # the same data dir and database
    async with HubClient(server) as client:
        for handle in acknowledged:
            assert (await client.call("agents.get", {"agent": handle}, token=client.admin_key))["handle"] == handle
        # Credentials minted before the restart still work: the server keys survived too.
        me = await client.call("auth.whoami", token=agent.access_token)
        assert me["agent"]["agent_id"] == agent.agent_id
        with pytest.raises(RpcError) as missing:
            await client.call("agents.get", {"agent": unique_handle("never")}, token=client.admin_key)
        assert missing.value.code == "not_found"


@diagonal  # its own hub, stopped: each loop and each store once
async def test_a_client_that_stopped_reading_does_not_hold_up_shutdown(start_hub: Any) -> None:
    server: HubServer = start_hub()
    assert server.process is not None
    async with HubClient(server) as client:
        agent = await client.register("stuck")
        await client.call("agents.update_profile", {"description": "d" * 1024, "metadata": {"blob": "m" * 4000}},
                          token=agent.access_token)
        ws = await RpcSocket.open(server, agent.access_token)
        try:
            raw: socket.socket = ws.connection._stream.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            batch = [request("auth.whoami", request_id=i) for i in range(100)]
            for _ in range(20):  # ~11 MiB of answers, more than the socket buffers (<= 4 MiB + 32 KiB) hold
                await ws.send(batch)
            # Wait until the hub has answered ~6 MiB of them: its writes to the socket are blocked.
            with anyio.fail_after(60):
                while True:
                    metrics = (await client.http.get("/metrics")).text
                    done = [line for line in metrics.splitlines()
                            if line.startswith('parley_operations_total{operation="auth.whoami",outcome="ok"}')]
                    if done and float(done[0].split()[-1]) >= 1200:
                        break
                    await anyio.sleep(0.02)
            family = descendants(server.process.pid) | {server.process.pid}
            code, took = await sigterm_and_wait(server)
        finally:
            await ws.connection.close()
    assert code == 0, server.log()
    assert took < EXIT_WITHIN
    assert living(family) == set()


@sqlite_only
async def test_sigterm_closes_every_websocket_with_1001_after_answering_what_it_has_in_flight(start_hub: Any) -> None:
    server: HubServer = start_hub()
    async with HubClient(server) as client:
        agent = await client.register("going-away")
    idle = await RpcSocket.open(server, agent.access_token)
    busy = await RpcSocket.open(server, agent.access_token)
    try:
        await idle.call("auth.whoami")
        cursor = (await busy.call("events.list", {"limit": 100}))["next_cursor"]
        # A long poll that ends (empty) 0.6 s from now, within the second the hub gives requests in flight.
        await busy.send(request("events.list", {"after": cursor, "timeout": 0.6}, "polling"))
        # Answered after the poll was read, so the poll is in flight when the signal comes.
        assert (await busy.call("auth.whoami"))["agent"]["agent_id"] == agent.agent_id
        code, _ = await sigterm_and_wait(server)
        assert code == 0, server.log()
        answer = await busy.receive()
        assert answer["id"] == "polling" and answer["result"]["items"] == [], answer
        for ws in (busy, idle):
            with pytest.raises(ConnectionClosed) as closed, anyio.fail_after(10):
                await ws.receive()
            assert (closed.value.code, closed.value.reason) == (1001, GOING_AWAY_REASON)
    finally:
        await idle.connection.close()
        await busy.connection.close()
