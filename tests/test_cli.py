"""The `parley` command line: `call` against real hubs, `migrate` and `admin bootstrap` on fresh stores."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import create_engine, inspect

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


def stdout_json(done: subprocess.CompletedProcess[bytes]) -> Any:
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


async def assert_handle_free(hub: HubClient, handle: str) -> None:
    with pytest.raises(RpcError) as missing:
        await hub.call("agents.get", {"agent": handle}, token=hub.admin_key)
    assert missing.value.code == "not_found"


# -- parley call ------------------------------------------------------------------------------------------


async def test_call_prints_the_result_as_json_and_exits_0(hub: HubClient) -> None:
    agent = await hub.register("cli-call")
    key = await hub.api_key(agent)
    done = await parley(hub.server, "call", "auth.whoami", "{}", "--url", hub.server.url, "--api-key", key)
    result = stdout_json(done)
    assert result["agent"]["agent_id"] == agent.agent_id
    assert result["credential"]["kind"] == "api_key"


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
    assert done.returncode == 1
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
    first = fresh.run_cli("admin", "bootstrap", "--handle", "operator")
    assert first.returncode == 0, first.stderr
    admin = json.loads(first.stdout)
    assert admin["handle"] == "operator"
    assert admin["agent_id"].startswith("agt_")
    assert admin["api_key"].startswith("prl_") and admin["recovery_key"].startswith("prk_")
    again = fresh.run_cli("admin", "bootstrap", "--handle", "another-admin")
    assert again.returncode == 1, again.stderr
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
