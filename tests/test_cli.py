"""The `parley` command line: `call` against real hubs, `migrate` and `admin bootstrap` on fresh stores."""

import json
import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import create_engine, inspect

from bridges.cli import main

from .client import HubClient, RpcError, unique_handle
from .servers import HubServer, drop_postgres_database, free_port, make_server, parley_command

CONSOLE_SCRIPT = Path(sys.executable).parent / "parley"


async def parley(server: HubServer, *args: str, input: str | None = None,
                 env: dict[str, str] | None = None, script: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run `parley ARGS` (as `python -m bridges.cli`, or the installed console script) to completion."""
    command = [str(CONSOLE_SCRIPT), *args] if script else parley_command(*args)
    with anyio.fail_after(60):
        return await anyio.run_process(
            command, input=input.encode() if input is not None else None,
            stdin=subprocess.DEVNULL if input is None else None,
            env={**server.env, **(env or {})}, check=False,
        )


def one_line_error(done: subprocess.CompletedProcess[Any], exit_code: int, *starts: str) -> str:
    """The failure's one stderr line (no traceback), after checking the exit code and how it starts."""
    stderr = done.stderr.decode() if isinstance(done.stderr, bytes) else done.stderr
    assert done.returncode == exit_code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(tuple(f"parley: {start}" for start in starts)), lines[0]
    return lines[0]


def stdout_json(done: subprocess.CompletedProcess[bytes]) -> Any:
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


async def assert_handle_free(hub: HubClient, handle: str) -> None:
    with pytest.raises(RpcError) as missing:
        await hub.call("agents.get", {"agent": handle}, token=hub.admin_key)
    assert missing.value.code == "not_found"


# -- --help -----------------------------------------------------------------------------------------------


def help_of(command: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def undocumented(help_text: str) -> list[str]:
    """The arguments and subcommands listed in `help_text` without a help text.

    An entry is a line indented 2 (an argument) or 4 (a subcommand) spaces; its help follows after two
    or more spaces, or on the next lines, indented further. `{a,b}` lines only list subcommands.
    """
    missing = []
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if indent not in (2, 4) or line.lstrip().startswith("{"):
            continue
        entry = line.strip()
        next_line = lines[i + 1] if i + 1 < len(lines) else ""
        continued = next_line.strip() != "" and len(next_line) - len(next_line.lstrip()) > indent + 2
        if len(re.split(r"\s{2,}", entry, maxsplit=1)) < 2 and not continued:
            missing.append(entry)
    return missing


def test_every_option_of_every_subcommand_has_help_text(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    commands, seen = [[]], []
    while commands:
        command = commands.pop()
        text = help_of(command, capsys)
        seen.append(" ".join(command))
        assert undocumented(text) == [], f"parley {' '.join(command)} --help"
        subcommands = re.search(r"^  \{([\w,-]+)\}", text, re.MULTILINE)
        if subcommands:
            commands += [[*command, name] for name in subcommands.group(1).split(",")]
    assert {"serve", "call", "admin bootstrap", "mcp"} <= set(seen)


def test_an_option_without_help_text_is_found() -> None:
    text = """options:
  -h, --help            show this help message and exit
  --backend {asyncio,trio}
  --db DB               database URL
  --data-dir DATA_DIR   where the store lives, a long line that
                        goes on here
  --quiet
"""
    assert undocumented(text) == ["--backend {asyncio,trio}", "--quiet"]


# -- parley call ------------------------------------------------------------------------------------------


async def test_call_prints_the_result_as_json_and_exits_0(hub: HubClient) -> None:
    agent = await hub.register("cli-call")
    key = await hub.api_key(agent)
    done = await parley(hub.server, "call", "auth.whoami", "{}", "--url", hub.server.url, "--api-key", key)
    result = stdout_json(done)
    assert result["agent"]["agent_id"] == agent.agent_id
    assert result["credential"]["kind"] == "api_key"


async def test_call_ends_quietly_when_its_reader_stops_reading(hub: HubClient) -> None:
    """`parley call … | head`: the reader has gone when the answer is printed; no traceback, status 0."""
    agent = await hub.register("cli-pipe")
    command = " ".join([*map(shlex.quote, parley_command("call", "auth.whoami", "{}", "--url", hub.server.url,
                                                          "--api-key", agent.access_token)), "| true"])
    with anyio.fail_after(60):
        done = await anyio.run_process(["bash", "-c", f"{command}; exit ${{PIPESTATUS[0]}}"], check=False)
    assert (done.returncode, done.stderr) == (0, b"")


async def test_the_installed_console_script_calls_the_hub(hub: HubClient) -> None:
    agent = await hub.register("cli-script")
    done = await parley(hub.server, "call", "agents.get", json.dumps({"agent": agent.handle}), "--url", hub.server.url,
                        "--api-key", agent.access_token, script=True)
    assert stdout_json(done)["agent_id"] == agent.agent_id


async def test_call_reads_params_from_stdin(hub: HubClient) -> None:
    handle = unique_handle("cli-stdin")
    done = await parley(hub.server, "call", "auth.register", "--url", hub.server.url,
                        input=json.dumps({"handle": handle, "display_name": "From stdin"}))
    result = stdout_json(done)
    assert result["handle"] == handle
    profile = await hub.call("agents.get", {"agent": handle}, token=hub.admin_key)
    assert profile["display_name"] == "From stdin"


async def test_call_takes_the_url_and_key_from_the_environment(hub: HubClient) -> None:
    agent = await hub.register("cli-env")
    key = await hub.api_key(agent)
    done = await parley(hub.server, "call", "keys.list", env={"PARLEY_URL": hub.server.url, "PARLEY_API_KEY": key})
    assert [item["name"] for item in stdout_json(done)["items"]] == ["test"]


async def test_a_hub_error_exits_non_zero_with_the_error_on_stderr(hub: HubClient) -> None:
    agent = await hub.register("cli-error")
    cases = [
        (["call", "auth.whoami", "{}"], "unauthorized"),
        (["call", "auth.whoami", "{}", "--api-key", "prl_not_a_key"], "unauthorized"),
        (["call", "auth.register", json.dumps({"handle": agent.handle})], "conflict"),
        (["call", "auth.register", json.dumps({"handle": 42})], "invalid_request"),
        (["call", "no.such_method", "{}"], "method_not_found"),
    ]
    for args, code in cases:
        done = await parley(hub.server, *args, "--url", hub.server.url)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stdout == b"", args
        error = json.loads(done.stderr)
        assert error["code"] == code, args
    done = await parley(hub.server, "call", "auth.register", json.dumps({"handle": 42}), "--url", hub.server.url)
    assert [item["field"] for item in json.loads(done.stderr)["details"]["errors"]] == ["handle"]


async def test_invalid_json_params_exit_2_without_calling_the_hub(hub: HubClient) -> None:
    handle = unique_handle("cli-bad-json")
    for args, stdin in [
        (["call", "auth.register", '{"handle": "' + handle + '",'], None),
        (["call", "auth.register"], '{"handle": "' + handle + '"'),
        (["call", "auth.register", "{'handle': '" + handle + "'}"], None),
    ]:
        done = await parley(hub.server, *args, "--url", hub.server.url, input=stdin)
        assert done.returncode == 2, done.stderr
        assert done.stdout == b""
    await assert_handle_free(hub, handle)


async def test_call_to_an_unreachable_hub_exits_with_an_error(hub_server: HubServer) -> None:
    done = await parley(hub_server, "call", "auth.whoami", "{}", "--url", f"http://127.0.0.1:{free_port()}",
                        "--timeout", "5")
    assert done.returncode not in (0, 1, 2)
    assert done.stdout == b""


async def test_a_second_bootstrap_on_a_running_hub_refuses_and_the_first_admin_stays(hub: HubClient) -> None:
    done = await parley(hub.server, "admin", "bootstrap", "--handle", unique_handle("admin2"))
    one_line_error(done, 1, "this hub already has an admin")
    assert done.stdout == b""
    me = await hub.call("auth.whoami", token=hub.admin_key)
    assert me["is_admin"] is True
    assert me["agent"]["agent_id"] == hub.server.admin["agent_id"]


# -- parley migrate, parley admin bootstrap (no server running) ----------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path, store_kind: str) -> Any:
    """A configured hub that has never run: an empty data dir (and an empty PostgreSQL database)."""
    server = make_server("asyncio", store_kind, tmp_path / "data")
    yield server
    if server.database_url:
        drop_postgres_database(server.database_url)


def _tables(server: HubServer) -> set[str]:
    if server.database_url:
        engine = create_engine(server.database_url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    assert server.sqlite_path is not None
    with sqlite3.connect(server.sqlite_path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_migrate_creates_the_schema_on_a_fresh_data_dir_and_is_idempotent(fresh: HubServer) -> None:
    assert not fresh.data_dir.exists()
    done = fresh.run_cli("migrate")
    assert done.returncode == 0, done.stderr
    tables = _tables(fresh)
    assert {"agents", "api_keys", "refresh_tokens", "alembic_version"} <= tables
    if fresh.store == "sqlite":
        assert fresh.sqlite_path is not None and fresh.sqlite_path.is_file()
    again = fresh.run_cli("migrate")
    assert again.returncode == 0, again.stderr
    assert _tables(fresh) == tables


def test_migrate_honours_the_data_dir_flag(tmp_path: Path) -> None:
    server = make_server("asyncio", "sqlite", tmp_path / "env-dir")
    elsewhere = tmp_path / "flag-dir"
    done = server.run_cli("migrate", "--data-dir", str(elsewhere))
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "parley.db").is_file()
    assert not (tmp_path / "env-dir" / "parley.db").exists()


def test_bootstrap_prints_the_admin_once_and_refuses_a_second_time(fresh: HubServer) -> None:
    assert fresh.run_cli("migrate").returncode == 0
    first = fresh.run_cli("admin", "bootstrap", "--handle", "operator")
    assert first.returncode == 0, first.stderr
    admin = json.loads(first.stdout)
    assert admin["handle"] == "operator"
    assert admin["agent_id"].startswith("agt_")
    assert admin["api_key"].startswith("prl_") and admin["recovery_key"].startswith("prk_")
    again = fresh.run_cli("admin", "bootstrap", "--handle", "another-admin")
    one_line_error(again, 1, "this hub already has an admin")
    assert again.stdout == ""
    assert admin["api_key"] not in again.stderr
    if fresh.store == "sqlite":
        assert fresh.sqlite_path is not None
        with sqlite3.connect(fresh.sqlite_path) as conn:
            assert conn.execute("SELECT count(*) FROM agents WHERE is_admin").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)


def test_the_cli_without_a_command_is_a_usage_error(tmp_path: Path) -> None:
    server = make_server("asyncio", "sqlite", tmp_path / "data")
    done = server.run_cli()
    assert done.returncode == 2
    done = server.run_cli("call")
    assert done.returncode == 2
    assert os.path.exists(tmp_path / "data") is False


def test_bootstrap_without_a_data_directory_refuses_and_creates_none(tmp_path: Path) -> None:
    server = make_server("asyncio", "sqlite", tmp_path / "nowhere")
    line = one_line_error(server.run_cli("admin", "bootstrap"), 2, "no data directory")
    assert str(tmp_path / "nowhere") in line
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("command", [("migrate",), ("admin", "bootstrap")])
def test_an_unreachable_database_is_one_line_and_exit_3(tmp_path: Path, command: tuple[str, ...]) -> None:
    url = f"postgresql+psycopg://nobody:hunter2@127.0.0.1:{free_port()}/parley"
    server = make_server("asyncio", "sqlite", tmp_path / "data", database_url=url)
    line = one_line_error(server.run_cli(*command), 3, "cannot use the database")
    assert "127.0.0.1" in line and "hunter2" not in line


@pytest.mark.parametrize(("setting", "value"), [
    ("rate_read", "fast"), ("rate_read", "10:-1"), ("trusted_proxies", "10.0.0.1/8"), ("max_body_bytes", "lots"),
])
def test_serve_with_a_malformed_setting_is_one_line_naming_it_and_exit_2(
    tmp_path: Path, setting: str, value: str
) -> None:
    server = make_server("asyncio", "sqlite", tmp_path / "data", **{setting: value})
    done = subprocess.run(parley_command("serve", "--port", str(server.port)), env=server.env,
                          capture_output=True, text=True, timeout=60)
    one_line_error(done, 2, f"invalid configuration: PARLEY_{setting.upper()}:")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_serve_on_a_port_in_use_is_one_line_and_exit_3(tmp_path: Path, backend: str) -> None:
    server = make_server(backend, "sqlite", tmp_path / "data")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(parley_command("serve", "--backend", backend, "--port", str(port)), env=server.env,
                              capture_output=True, text=True, timeout=60)
    line = one_line_error(done, 3, "cannot listen")
    assert f"127.0.0.1:{port}" in line and "in use" in line
