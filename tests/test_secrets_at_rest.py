"""No secret the hub hands out is kept where a copy of its store (or its log) would reveal it.

Recovery keys, API keys and refresh tokens are shown once; the store keeps only hashes. After a
hub has registered, made keys, exchanged, refreshed and recovered, the raw bytes of the SQLite
database (and its WAL), every row of every PostgreSQL table as text, and the server log must not
contain any of them, nor the secret part on its own.
"""

import stat
from pathlib import Path

import psycopg

from .client import HubClient, RpcSocket
from .conftest import ServerFactory, diagonal
from .servers import HubServer


def secret_part(credential: str) -> str:
    """The random part of a credential (`prl_<id>_<secret><checksum>`, `prk_<secret><checksum>`)."""
    return credential.rsplit("_", 1)[1][:43]


async def issue_every_kind_of_secret(hub: HubClient) -> tuple[str, dict[str, str]]:
    """Run the hub through every way it hands out a secret, and every way a client presents one (JSON-RPC
    over HTTP, a WebSocket): the agent's id, and name -> secret."""
    invite = await hub.call("admin.invites.create", {"uses": 2}, token=hub.admin_key)
    secrets: dict[str, str] = {"invite code": invite["invite_code"]}
    agent = await hub.register("at-rest", invite_code=invite["invite_code"])  # needed on an invite-only hub
    secrets |= {"recovery key 1": agent.recovery_key, "refresh token (register)": agent.refresh_token}
    first = await hub.call("keys.create", {"name": "first"}, token=agent.access_token)
    second = await hub.call("keys.create", {"name": "second", "scopes": ["agents:read"], "expires_in_days": 3},
                            token=agent.access_token)
    secrets |= {"api key 1": first["api_key"], "api key 2": second["api_key"]}
    exchanged = await hub.call("auth.token", {"api_key": first["api_key"]})
    secrets["refresh token (exchange)"] = exchanged["refresh_token"]
    refreshed = await hub.call("auth.refresh", {"refresh_token": exchanged["refresh_token"]})
    secrets["refresh token (refresh)"] = refreshed["refresh_token"]
    recovered = await hub.call("auth.recover", {"agent": agent.handle, "recovery_key": agent.recovery_key})
    secrets |= {
        "recovery key 2": recovered["recovery_key"],
        "api key (recover)": recovered["api_key"]["api_key"],
        "refresh token (recover)": recovered["tokens"]["refresh_token"],
    }
    again = await hub.call("auth.refresh", {"refresh_token": recovered["tokens"]["refresh_token"]})
    secrets["refresh token (after recover)"] = again["refresh_token"]
    # Used once more, so the hub also writes "last used" and the like near them.
    await hub.call("auth.whoami", token=recovered["api_key"]["api_key"])
    third = await hub.call("keys.create", {"name": "third"}, token=again["access_token"])
    secrets["api key 3"] = third["api_key"]
    async with await RpcSocket.open(hub.server, token=third["api_key"]) as socket:
        await socket.call("auth.whoami")
        await socket.call("auth.authenticate", {"token": again["access_token"]})
    await hub.call("keys.revoke", {"key_id": third["key"]["key_id"]}, token=again["access_token"])
    return agent.agent_id, secrets


def needles(secrets: dict[str, str]) -> dict[str, bytes]:
    found = {}
    for name, secret in secrets.items():
        found[name] = secret.encode()
        found[f"{name}, secret part"] = secret_part(secret).encode()
    return found


def assert_none_in(haystack: bytes, secrets: dict[str, str], where: str) -> None:
    leaked = [name for name, needle in needles(secrets).items() if needle in haystack]
    assert leaked == [], f"{where} holds {leaked}"


def sqlite_bytes(server: HubServer) -> bytes:
    assert server.sqlite_path is not None
    files = [server.sqlite_path, *server.sqlite_path.parent.glob(server.sqlite_path.name + "-*")]
    assert server.sqlite_path.is_file()
    return b"".join(path.read_bytes() for path in files)


def postgres_rows_as_text(server: HubServer) -> bytes:
    with psycopg.connect(server.database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'")]
        assert tables
        text = []
        for table in tables:
            text += [row[0] for row in conn.execute(f"SELECT t::text FROM {table} AS t")]  # noqa: S608
    return "\n".join(text).encode()


async def test_the_store_keeps_no_secret_it_handed_out(hub: HubClient) -> None:
    agent_id, secrets = await issue_every_kind_of_secret(hub)
    server = hub.server
    stored = sqlite_bytes(server) if server.store == "sqlite" else postgres_rows_as_text(server)
    assert agent_id.encode() in stored  # a control: what the test reads is where the hub writes
    assert_none_in(stored, secrets, f"the {server.store} store")


@diagonal  # its own hub, for a rule neither the loop nor the store decides
async def test_the_server_log_holds_no_secret_even_at_debug(start_hub: ServerFactory) -> None:
    server = start_hub(log_level="DEBUG", registration="invite")
    async with HubClient(server) as hub:
        _, secrets = await issue_every_kind_of_secret(hub)
    log = Path(server.data_dir / "server.log").read_bytes()
    assert b" DEBUG " in log, "the hub did not log at DEBUG: nothing was tested"
    assert_none_in(log, secrets, "the server log")


async def test_the_server_keys_file_is_readable_by_its_owner_only(hub: HubClient) -> None:
    keys = hub.server.data_dir / "server-keys.json"
    assert keys.is_file()
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
