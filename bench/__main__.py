"""Every benchmark scenario in turn, each in its own process (a fresh interpreter and its own hub).

    .venv/bin/python -m bench [--quick] [--backend asyncio|trio|both]     # or: make bench ARGS=--quick

Options are passed to every scenario. A scenario that fails is reported and the others still run;
the exit status says whether all passed.
"""

import subprocess
import sys
from typing import Final

SCENARIOS: Final = ("send", "send_beside_ingestion", "fanout", "history", "mcp", "rest", "cluster", "send_workers",
                     "memory", "documents", "workflows", "schedules", "webhooks", "connections")
"""Messaging in its issue's order (several nodes after the single-node ones), then memory and documents
(their evaluation sets must be at hand) and workflows, the 10,000 connections last (the slowest)."""


def main() -> int:
    failed = []
    for name in SCENARIOS:
        module = f"bench.{name}"
        print(f"== {module}", flush=True)
        if subprocess.run([sys.executable, "-m", module, *sys.argv[1:]]).returncode != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
