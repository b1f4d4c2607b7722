"""Schemathesis against /openapi.json of a live hub: no 5xx, and no response the document does not allow.

Runs the `st` CLI as a subprocess (exactly what an integrator would run) on each backend and each store
once (asyncio on SQLite, trio on PostgreSQL: the document is the same, and 40 s a run is the cost),
authenticated with a fresh agent's access token, bounded by `--max-examples` and `--max-time`.
"""

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Final

import anyio
import pytest

from .client import Agent, HubClient
from .conftest import ServerFactory, diagonal
from .messaging import direct, send
from .servers import HubServer

MAX_EXAMPLES: Final = 25
MAX_SECONDS: Final = 40
EXCLUDED_CHECKS: Final = ("positive_data_acceptance", "use_after_free")
"""See the docstring of the main test for why each is left out."""


def st_command() -> list[str]:
    beside_python = Path(sys.executable).parent / "st"
    found = str(beside_python) if beside_python.exists() else shutil.which("st")
    assert found, "the schemathesis CLI `st` is not installed: pip install -e '.[test]'"
    return [found]


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(value) for value in values) + "]"


def config(agents: list[str], conversations: list[str], messages: list[str]) -> str:
    """A schemathesis.toml: real ids are offered half of the time (so the run reaches past `not_found`),
    and read timeouts that fit the event routes (a stream never ends; a long poll waits up to 30 s)."""
    return f"""
[dictionaries.agents]
values = {toml_list(agents)}
[dictionaries.conversations]
values = {toml_list(conversations)}
[dictionaries.messages]
values = {toml_list(messages)}

[parameters]
"path.agent" = {{ dictionary = "agents", probability = 0.5 }}
"path.agent_id" = {{ dictionary = "agents", probability = 0.5 }}
"path.conversation_id" = {{ dictionary = "conversations", probability = 0.5 }}
"path.message_id" = {{ dictionary = "messages", probability = 0.5 }}
"body.agent" = {{ dictionary = "agents", probability = 0.5 }}
"body.to" = {{ dictionary = "agents", probability = 0.5 }}
"body.conversation_id" = {{ dictionary = "conversations", probability = 0.5 }}

[checks.negative_data_rejection]
# Schemathesis's list, with 413: an over-long query string is refused as payload_too_large, like a body.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[[operations]]
include-operation-id = "events.stream"
request-timeout = 1
max-stream-events = 3

[[operations]]
include-operation-id = "events.list"
request-timeout = 35
"""


async def run_schemathesis(
    server: HubServer, workdir: Path, token: str, config_text: str, *args: str, seconds: int = MAX_SECONDS
) -> None:
    """Run `st run` against the server's document for about `seconds` (schemathesis repeats fuzzing until
    its time budget is spent); fail with its report unless it exits 0."""
    (workdir / "schemathesis.toml").write_text(config_text)
    command = [
        *st_command(), "--config-file", str(workdir / "schemathesis.toml"), "run", f"{server.url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all", "--exclude-checks", ",".join(EXCLUDED_CHECKS),
        "--max-examples", str(MAX_EXAMPLES), "--max-time", str(seconds),
        "--generation-database", "none", "--no-color", *args,
    ]
    with anyio.fail_after(seconds + 60):
        # In its own directory: schemathesis keeps state (.schemathesis/) in the working directory.
        process = await anyio.run_process(command, cwd=workdir, check=False, env={**os.environ, "NO_COLOR": "1"})
    report = process.stdout.decode(errors="replace") + process.stderr.decode(errors="replace")
    assert process.returncode == 0, (
        f"schemathesis failed (exit {process.returncode}):\n{report}\nthe hub's log ends:\n{server.log()[-4000:]}"
    )


async def seeded_agents(hub: HubClient) -> tuple[Agent, dict[str, list[str]]]:
    """The fuzzing agent, with a peer, a direct conversation and a message to find."""
    fuzzer = await hub.register("fuzzer")
    peer = await hub.register("peer")
    conversation = await direct(hub, fuzzer, peer)
    message = await send(hub, fuzzer, conversation, "hello")
    return fuzzer, {
        "agents": [peer.handle, peer.agent_id],
        "conversations": [conversation],
        "messages": [message["message_id"]],
    }


@diagonal
@pytest.mark.long
@pytest.mark.timeout(180)
async def test_schemathesis_finds_no_server_error_and_no_response_outside_the_document(
    start_hub: ServerFactory, tmp_path: Path
) -> None:
    """Every schemathesis check except:

    - positive_data_acceptance: it expects every schema-valid input to succeed, but some are refused
      by design with a documented 400: opaque cursors (`cursor` is any string to the schema, only the
      hub's own cursors decode), domain rules the schema cannot state (exactly one of `agent` and
      `conversation_id`; `title` or `topic`; a `seq` or cursor beyond the newest), and 404/409 for
      ids and handles that do not exist or are taken.
    - use_after_free: it expects a deleted resource to be gone, but a deleted message stays readable
      as a tombstone (same `seq`, no body) by design, and a revoked key stays listed as revoked.

    `POST /api/auth/logout` is left out of this run because it ends the session of the run's own
    access token (every later request would be a 401); the next test fuzzes it alone.
    `POST /api/auth/recover` stays in: a generated recovery key never matches, so it cannot end the
    run's credential.
    """
    server = start_hub()
    async with HubClient(server) as hub:
        fuzzer, ids = await seeded_agents(hub)
    await run_schemathesis(
        server, tmp_path, fuzzer.access_token, config(ids["agents"], ids["conversations"], ids["messages"]),
        "--exclude-path", "/api/auth/logout",
    )


@diagonal
async def test_logout_answers_only_as_the_document_says_under_schemathesis(hub: HubClient, tmp_path: Path) -> None:
    """Logout fuzzed on its own: once it ends the session, later calls are documented 401s."""
    agent = await hub.register("logout-fuzzer")
    await run_schemathesis(hub.server, tmp_path, agent.access_token, "", "--include-path", "/api/auth/logout",
                           seconds=8)
