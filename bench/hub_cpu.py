"""Where the hub's CPU goes, per request and per thread, under one kind of load: a diagnostic for
profiling, not a scenario of `make bench`.

    .venv/bin/python -m bench.hub_cpu rest-get|rest-post|mcp-send|mcp-read|mcp-echo
                                      [--backend asyncio|trio] [--concurrency 8] [--seconds 8]

The requests are `bench.rest`'s and `bench.mcp`'s (`mcp-echo` is the MCP floor's echo tool, in its own
process). After a 2-second warm-up, each thread's user and system CPU is read from
`/proc/PID/task/*/stat` before and after the load and divided by the requests served. The threads are
the event loop (the process's main thread) and anyio's worker threads: the SQLite writer, reads that
are not bounded, argon2. This is how the cost of handing reads to worker threads was found
(bench/RESULTS.md, "Performance round 3, continued", fourth session).

To see inside a thread, run py-spy on the printed pid meanwhile (`py-spy record --nonblocking --pid
PID`; its default, blocking mode over-counts lines next to system calls).
"""

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from bench import mcp, rest
from bench.clients import running_hub, thread_cpu_seconds
from bench.http_floors import RawHttp, drive, floor_process, json_headers, run_client

LOADS: Final = ("rest-get", "rest-post", "mcp-send", "mcp-read", "mcp-echo")
WARM_UP_SECONDS: Final = 2.0

Request = Callable[[RawHttp, int], Any]


@contextmanager
def loaded_server(load: str, backend: str) -> Iterator[tuple[int, int, Request]]:
    """The server for `load` with what it needs set up; yields (port, pid, request)."""
    if load == "mcp-echo":
        with floor_process("mcp", backend) as (port, pid):
            yield port, pid, mcp.echo_call()
        return
    with running_hub(backend) as hub:
        assert hub.process is not None
        if load.startswith("rest"):
            key, ids, _ = rest.set_up(hub)
            headers = json_headers(key)
            request = rest.get_request(headers, ids[0]) if load == "rest-get" else rest.post_request(headers, ids)
        else:
            keys, ids = mcp.set_up(hub)
            request = mcp.hub_calls(mcp.Sessions(keys), ids)["send_message" if load == "mcp-send" else "read_messages"]
        yield hub.port, hub.process.pid, request


def measure(load: str, backend: str, concurrency: int, seconds: float) -> None:
    with loaded_server(load, backend) as (port, pid, request):
        print(f"{load} on {backend}: server pid {pid}")
        run_client(lambda: drive(port, pid, request, concurrency=concurrency, seconds=WARM_UP_SECONDS))
        before = thread_cpu_seconds(pid)
        sample = run_client(lambda: drive(port, pid, request, concurrency=concurrency, seconds=seconds))
        after = thread_cpu_seconds(pid)
    served = len(sample.latencies)
    print(f"{sample.rate:,.0f} requests/s over {served:,} requests; ms of CPU per request:")
    total = 0.0
    for tid, (user, system) in sorted(after.items()):
        user_before, system_before = before.get(tid, (0.0, 0.0))
        spent = (user - user_before) + (system - system_before)
        total += spent
        if spent * 1000 / served >= 0.005:
            role = "event loop" if tid == pid else f"worker thread {tid}"
            print(f"  {role:<24} user {1000 * (user - user_before) / served:6.3f}  "
                  f"system {1000 * (system - system_before) / served:6.3f}")
    print(f"  {'all threads':<24} {1000 * total / served:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("load", choices=LOADS)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections (MCP sessions)")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    measure(args.load, args.backend, args.concurrency, args.seconds)


if __name__ == "__main__":
    main()
