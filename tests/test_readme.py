"""The README is the front door: its walkthrough and its example agent run against a real hub."""

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio

from .client import HubClient

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_blocks(tag: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"<!-- tested: {tag} -->\n```\w+\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_marks_its_walkthrough_and_agent_as_tested() -> None:
    assert len(readme_blocks("walkthrough")) >= 3
    assert len(readme_blocks("agent")) == 1


async def test_the_walkthrough_runs_as_written(hub: HubClient, tmp_path: Path) -> None:
    script = "set -euo pipefail\n" + "\n".join(readme_blocks("walkthrough"))
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "URL": hub.server.url, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    env.pop("PARLEY_API_KEY", None)
    result = await anyio.to_thread.run_sync(lambda: subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120,
    ))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '"error"' not in result.stdout, result.stdout[-3000:]
    assert "Yes: 42." in result.stdout


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
