"""The README is the front door: its walkthrough and examples run against a real hub, and it and docs/
link only to what the repository has."""

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio

from .client import Agent, HubClient
from .conftest import ServerFactory
from .samples import pdf
from .servers import free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_blocks(tag: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"<!-- tested: {tag} -->\n```\w+\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_marks_its_walkthrough_and_agent_as_tested() -> None:
    assert len(readme_blocks("walkthrough")) >= 3
    assert len(readme_blocks("agent")) == 1


ROOT = README.parent
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
CODE_BLOCK = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")
# The design and notes beside the checkout, which a clone does not have (the evaluation data is read
# from there on purpose: it is never copied into the repository).
OUTSIDE = re.compile(r"\bDESIGN(\.md| §)|\.\./shared/(?!data/)")


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lowercase, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", CODE_BLOCK.sub("", page.read_text()), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_the_readme_and_docs_link_only_to_what_the_repository_has() -> None:
    assert (ROOT / "docs" / "design.md") in PAGES
    broken = []
    for page in PAGES:
        prose = CODE_BLOCK.sub("", page.read_text())
        broken += [f"{page.name} mentions {m.group()}" for m in OUTSIDE.finditer(prose)]
        for target in LINK.findall(prose):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.is_relative_to(ROOT) or not linked.exists():
                broken.append(f"{page.name} links to {target}: not a file of the repository")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
                broken.append(f"{page.name} links to {target}: no such heading")
    assert not broken, broken


def test_the_code_points_at_the_design_in_the_repository() -> None:
    sources = [path for package in ("protocol", "storage", "hub", "mcp_tools", "bridges", "tests", "bench")
               for path in (ROOT / package).rglob("*.py") if "node_modules" not in path.parts]
    assert len(sources) > 50
    mentions = [f"{path.relative_to(ROOT)}: {m.group()}" for path in sources
                for m in OUTSIDE.finditer(path.read_text())]
    assert not mentions, mentions


async def test_the_walkthrough_runs_as_written(hub: HubClient, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"  # where a reader runs it; its temporary files go to TMPDIR
    checkout.mkdir()
    (checkout / "report.pdf").write_bytes(pdf(["Quarterly report. Summary of the quarter.",
                                               "Revenue grew 42 percent in the north region."]))
    script = "set -euo pipefail\n" + "\n".join(readme_blocks("walkthrough"))
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "URL": hub.server.url, "PATH": f"{venv_bin}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    env.pop("PARLEY_API_KEY", None)
    result = await anyio.to_thread.run_sync(lambda: subprocess.run(
        ["bash", "-c", script], cwd=checkout, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120,
    ))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '"error":{' not in result.stdout, result.stdout[-3000:]
    assert "Yes: 42." in result.stdout
    assert '"last_read_seq":2,"unread_count":0' in result.stdout  # bob read alice's message, not just seq 1
    assert re.search(r'"body":"Hello Bob\. Got the Q3 numbers\?","metadata":\{\},[^{}]*"revision":1,', result.stdout)
    # The credentials it is handed (a recovery key, API keys, tokens) stay out of the directory it runs in.
    assert sorted(path.name for path in checkout.iterdir()) == ["report.pdf"]
    assert '"duplicate":true' in result.stdout and '"change":"updated"' in result.stdout
    assert result.stdout.count("The numbers are due on Friday.") >= 2  # remembered by alice, recalled by bob
    assert '"state":"ready"' in result.stdout and '"pages":2' in result.stdout
    assert "event: execution.completed" in result.stdout and '"output":"Yes, final."' in result.stdout
    assert re.search(r'"text":"Revenue grew 42 percent in the north region\.[^"]*","score":[^}]*'
                     r'"citation":\{[^}]*"page":2',
                     result.stdout), result.stdout[-3000:]


def _example_program(tmp_path: Path, tag: str) -> Path:
    program = tmp_path / f"{tag}.py"
    program.write_text(readme_blocks(tag)[0])
    return program


async def _example_env(hub: HubClient, agent: Agent) -> dict[str, str]:
    """What the README's MCP examples read: the hub's URL and an API key, and the venv's `parley` on PATH."""
    return {**os.environ, "PARLEY_URL": hub.server.url, "PARLEY_API_KEY": await hub.api_key(agent),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


async def _run_mcp_example(hub: HubClient, agent: Agent, tag: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    program, env = _example_program(tmp_path, tag), await _example_env(hub, agent)
    return await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, str(program)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120))


async def test_the_memory_example_remembers_and_recalls_over_mcp(hub: HubClient, tmp_path: Path) -> None:
    result = await _run_mcp_example(hub, await hub.register("mcp-memory"), "memory-mcp", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "The demo is on Thursday at 3pm."


async def test_the_documents_example_adds_watches_and_searches_over_mcp(hub: HubClient, tmp_path: Path) -> None:
    result = await _run_mcp_example(hub, await hub.register("mcp-documents"), "documents-mcp", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "Handbook 0-30 Expenses are filed by the 5th."


async def test_the_workflows_example_runs_one_over_mcp_while_bob_answers(hub: HubClient, tmp_path: Path) -> None:
    """As the README runs it: in the walkthrough's shell, as Alice (who owns `ask-bob`), with Bob answering."""
    alice, bob = await hub.register("mcp-workflows"), await hub.register("asked")
    await hub.call("workflows.create", {"name": "ask-bob", "nodes": [
        {"id": "ask", "type": "ask", "to": bob.handle, "text": "{{ input.question }}"}],
        "output": "{{ steps.ask.text }}"}, token=alice.access_token)
    (tmp_path / "run_ask.py").write_text(readme_blocks("workflows-mcp")[0])
    field = next(line for line in readme_blocks("walkthrough")[0].splitlines() if line.startswith("field()"))
    script = "set -euo pipefail\n" + field + "\n" + readme_blocks("workflows-mcp-run")[0]
    env = {**os.environ, "URL": hub.server.url, "PARLEY_URL": hub.server.url, "ALICE": alice.access_token,
           "BOB": bob.access_token, "J": "content-type: application/json",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PARLEY_API_KEY", None)  # the block sets it: Alice's credential, not the walkthrough agent's
    result = await anyio.to_thread.run_sync(lambda: subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=90))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # run_ask.py prints last, after Bob's answer (which curl prints with no newline of its own)
    assert result.stdout.strip().endswith("completed Friday works."), result.stdout[-3000:]


async def test_a_trigger_reports_its_result_to_the_readme_receiver(start_hub: ServerFactory, tmp_path: Path) -> None:
    server = start_hub(outbound_allow="127.0.0.1")  # as the block says: its receiver is on this machine
    (tmp_path / "receiver.py").write_text(readme_blocks("receiver")[0])
    script = "set -euo pipefail\n" + readme_blocks("triggers")[0]
    env = {**os.environ, "URL": server.url, "PORT": str(free_port()),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = await anyio.to_thread.run_sync(lambda: subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "execution.completed 42" in result.stdout  # verified by the receiver with standardwebhooks
    assert '"status":"completed"' in result.stdout and '"trigger":"api_key"' in result.stdout


async def test_the_example_agent_answers_a_direct_message(hub: HubClient, tmp_path: Path) -> None:
    agent = await hub.register("echo-agent")
    key = await hub.api_key(agent)
    caller = await hub.register("caller")
    program = tmp_path / "agent.py"
    program.write_text(readme_blocks("agent")[0])
    env = {**os.environ, "PARLEY_URL": hub.server.url, "PARLEY_API_KEY": key,
           "PYTHONPATH": str(README.parent)}
    process = await anyio.open_process([sys.executable, str(program)], env=env)
    try:
        with anyio.fail_after(60):
            # The agent listens from when it subscribes: keep sending until one is answered.
            for attempt in range(600):
                sent = await hub.call("messages.send", {"to": agent.handle, "body": f"ping {attempt}"},
                                      token=caller.access_token)
                page = await hub.call("messages.list", {"conversation_id": sent["conversation_id"], "limit": 200},
                                      token=caller.access_token)
                replies = [m["body"] for m in page["items"] if m["sender_id"] == agent.agent_id]
                if replies:
                    break
                await anyio.sleep(0.1)
        pings = {m["body"] for m in page["items"] if m["sender_id"] == caller.agent_id}
        assert replies and all(reply.removeprefix("You said: ") in pings for reply in replies)
    finally:
        process.terminate()
        await process.wait()
        await process.aclose()
