"""The `parley` command: serve, migrate, bootstrap the first admin, and call operations from scripts."""

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from . import mcp_stdio  # light: it too imports the hub only when its command runs

if TYPE_CHECKING:
    from hub.config import Settings

# The hub, the store and the app are imported by the commands that use them, so `parley call`
# starts as fast as a script calling it in a loop needs.


def _settings(args: argparse.Namespace) -> "Settings":
    from hub.config import Settings

    return Settings.from_env(
        database_url=getattr(args, "db", None),
        data_dir=getattr(args, "data_dir", None),
        registration=getattr(args, "registration", None),
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from .runner import serve

    serve(_settings(args), host=args.host, port=args.port, backend=args.backend)
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from .app import migrate

    settings = _settings(args)
    migrate(settings)
    print(f"migrated {settings.store_url().split('@')[-1]}")
    return 0


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from .app import running_hub

    async def bootstrap() -> tuple[str, str, Any]:
        async with running_hub(_settings(args)) as hub:
            return await hub.services.identity.bootstrap_admin(args.handle)

    from protocol.errors import HubError

    try:
        agent_id, recovery_key, key = anyio.run(bootstrap)
    except HubError as error:
        print(f"parley: {error.message}", file=sys.stderr)
        return 1
    print(json.dumps({"agent_id": agent_id, "handle": args.handle, "api_key": key.api_key,
                      "recovery_key": recovery_key}, indent=2))
    print("Store both secrets now: they are shown once and the hub keeps only hashes.", file=sys.stderr)
    return 0


def _cmd_call(args: argparse.Namespace) -> int:
    raw = args.params if args.params is not None else ("{}" if sys.stdin.isatty() else sys.stdin.read() or "{}")
    try:
        params = json.loads(raw)
    except ValueError as exc:
        print(f"parley: the params are not valid JSON: {exc}", file=sys.stderr)
        return 2
    headers = {"content-type": "application/json"}
    if args.api_key:
        headers["authorization"] = f"Bearer {args.api_key}"
    request = {"jsonrpc": "2.0", "id": 1, "method": args.method, "params": params}
    try:
        response = httpx.post(args.url.rstrip("/") + "/rpc", json=request, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"parley: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 3
    try:
        body = response.json()
    except ValueError:
        print(f"parley: HTTP {response.status_code} from {args.url}: {response.text[:200]}", file=sys.stderr)
        return 3
    if "error" in body:
        print(json.dumps(body["error"].get("data", body["error"]), indent=2), file=sys.stderr)
        return 1
    print(json.dumps(body["result"], indent=2))
    return 0


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="database URL (default: SQLite in the data dir; env PARLEY_DATABASE_URL)")
    parser.add_argument("--data-dir", help="where the embedded store and server keys live (env PARLEY_DATA_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Parley: an agent-to-agent messaging hub.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the hub (HTTP, WebSocket, JSON-RPC) on one port")
    _store_options(serve)
    serve.add_argument("--host", default=os.environ.get("PARLEY_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PARLEY_PORT", "8080")))
    serve.add_argument("--backend", choices=["asyncio", "trio"], default=os.environ.get("PARLEY_BACKEND", "asyncio"))
    serve.add_argument("--registration", choices=["open", "invite", "closed"])
    serve.set_defaults(run=_cmd_serve)

    migrate_cmd = commands.add_parser("migrate", help="apply database migrations")
    _store_options(migrate_cmd)
    migrate_cmd.set_defaults(run=_cmd_migrate)

    admin = commands.add_parser("admin", help="operator commands").add_subparsers(dest="admin_command", required=True)
    bootstrap = admin.add_parser("bootstrap", help="create the first admin agent; prints its API key once")
    _store_options(bootstrap)
    bootstrap.add_argument("--handle", default="admin")
    bootstrap.set_defaults(run=_cmd_bootstrap)

    call = commands.add_parser("call", help="call one operation over JSON-RPC and print its result as JSON")
    call.add_argument("method", help="operation name, e.g. auth.whoami")
    call.add_argument("params", nargs="?", help="JSON object of params (default: read stdin, or {})")
    call.add_argument("--url", default=os.environ.get("PARLEY_URL", "http://127.0.0.1:8080"))
    call.add_argument("--api-key", default=os.environ.get("PARLEY_API_KEY"),
                      help="API key or access token (env PARLEY_API_KEY)")
    call.add_argument("--timeout", type=float, default=30.0)
    call.set_defaults(run=_cmd_call)

    mcp_stdio.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("PARLEY_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
