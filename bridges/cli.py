"""The `parley` command: serve, migrate, bootstrap the first admin, and call operations from scripts.

Every failure it can foresee ends the command with one line on stderr and a documented exit code
(`--debug` adds the traceback); anything else is a bug and shows its traceback:

    0  success
    1  the hub refused (`parley call` got an error, a second `admin bootstrap`)
    2  usage: bad arguments, bad params, a bad PARLEY_* setting, no data directory for an admin command
    3  unavailable: the hub, the database or the port cannot be reached or used
    130  interrupted (Ctrl-C)

A reader that stops reading the output (`parley call … | head`) ends the command quietly, with 0.
"""

import argparse
import errno
import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx

from . import mcp_stdio  # light: it too imports the hub only when its command runs

if TYPE_CHECKING:
    from hub.config import Settings

# The hub, the store and the app are imported by the commands that use them, so `parley call`
# starts as fast as a script calling it in a loop needs.

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_INTERRUPTED: Final = 130


@dataclass
class CommandFailed(Exception):
    """A foreseen failure: `message` is the one line the user sees, `exit_code` the command's status."""

    message: str
    exit_code: int


def _settings(args: argparse.Namespace) -> "Settings":
    """The command's settings (kept on `args`, so a failure can say which store it was about)."""
    from hub.config import Settings

    args.settings = Settings.from_env(
        database_url=getattr(args, "db", None),
        data_dir=getattr(args, "data_dir", None),
        registration=getattr(args, "registration", None),
    )
    return args.settings


def store_description(settings: "Settings") -> str:
    """Where a command keeps its data, as the user should read it (no password)."""
    from sqlalchemy.engine import make_url

    return make_url(settings.store_url()).render_as_string(hide_password=True)


def _existing_store(args: argparse.Namespace) -> "Settings":
    """The settings of an admin command, which works on a store that exists and never makes one."""
    settings = _settings(args)
    if not settings.database_url and not settings.data_dir.is_dir():
        raise CommandFailed(
            f"no data directory at {settings.data_dir.resolve()}: run this where the hub keeps its data, "
            "pass --data-dir (or PARLEY_DATA_DIR), or create it with `parley migrate`", EXIT_USAGE)
    return settings


def _cmd_serve(args: argparse.Namespace) -> int:
    from .runner import WorkerFailed, serve, serve_workers

    settings = _settings(args)
    if args.workers == 1 or args.listen_fd is not None:
        serve(settings, host=args.host, port=args.port, backend=args.backend, listen_fd=args.listen_fd,
              peer_fd=args.peer_fd, parent=args.parent)
        return EXIT_OK
    # Each worker is this command run alone, on the parent's socket, with the same options and environment.
    options = [f"--{name.replace('_', '-')}={value}" for name in ("db", "data_dir", "registration")
               if (value := getattr(args, name)) is not None]
    worker = [sys.executable, "-m", "bridges.cli", *(["--debug"] if args.debug else []), "serve",
              "--backend", args.backend, "--workers", "1", *options]
    try:
        serve_workers(settings, host=args.host, port=args.port, workers=args.workers, worker_command=worker)
    except WorkerFailed as exc:
        raise CommandFailed(str(exc), EXIT_UNAVAILABLE) from None
    return EXIT_OK


def _workers(value: str) -> int:
    """A number of worker processes, from `--workers` or PARLEY_WORKERS."""
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes, 1 or more, not {value!r}")
    return workers


def _cmd_migrate(args: argparse.Namespace) -> int:
    from .app import migrate

    settings = _settings(args)
    migrate(settings)
    print(f"migrated {store_description(settings)}")
    return EXIT_OK


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from .app import running_hub

    settings = _existing_store(args)

    async def bootstrap() -> tuple[str, str, Any]:
        async with running_hub(settings) as hub:
            return await hub.services.identity.bootstrap_admin(args.handle)

    agent_id, recovery_key, key = anyio.run(bootstrap)
    print(json.dumps({"agent_id": agent_id, "handle": args.handle, "api_key": key.api_key,
                      "recovery_key": recovery_key}, indent=2))
    print(f"parley: the admin is in {store_description(settings)}. Store both secrets now: they are shown "
          "once and the hub keeps only hashes.", file=sys.stderr)
    return EXIT_OK


def _cmd_call(args: argparse.Namespace) -> int:
    raw = args.params if args.params is not None else ("{}" if sys.stdin.isatty() else sys.stdin.read() or "{}")
    try:
        params = json.loads(raw)
    except ValueError as exc:
        raise CommandFailed(f"the params are not valid JSON: {exc}", EXIT_USAGE) from None
    headers = {"content-type": "application/json"}
    if args.api_key:
        headers["authorization"] = f"Bearer {args.api_key}"
    request = {"jsonrpc": "2.0", "id": 1, "method": args.method, "params": params}
    try:
        response = httpx.post(args.url.rstrip("/") + "/rpc", json=request, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise CommandFailed(f"cannot reach {args.url}: {exc}", EXIT_UNAVAILABLE) from None
    try:
        body = response.json()
    except ValueError:
        raise CommandFailed(f"HTTP {response.status_code} from {args.url}: {response.text[:200]}",
                            EXIT_UNAVAILABLE) from None
    if "error" in body:
        print(json.dumps(body["error"].get("data", body["error"]), indent=2), file=sys.stderr)
        return EXIT_REFUSED
    print(json.dumps(body["result"], indent=2))
    return EXIT_OK


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="database URL (default: SQLite in the data dir; env PARLEY_DATABASE_URL)")
    parser.add_argument("--data-dir", help="where the embedded store and server keys live (env PARLEY_DATA_DIR; "
                        "default ./parley-data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley", description="Parley: an agent-to-agent messaging hub.",
        epilog="Exit codes: 0 ok, 1 refused by the hub, 2 usage or configuration, 3 hub, database or port "
               "unavailable, 130 interrupted.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the hub (HTTP, WebSocket, JSON-RPC, MCP) on one port")
    _store_options(serve)
    serve.add_argument("--host", default=os.environ.get("PARLEY_HOST", "127.0.0.1"),
                       help="address to listen on (env PARLEY_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PARLEY_PORT", "8080")),
                       help="port to listen on, 0 for any free one (env PARLEY_PORT; default 8080)")
    serve.add_argument("--backend", choices=["asyncio", "trio"], default=os.environ.get("PARLEY_BACKEND", "asyncio"),
                       help="event loop: asyncio (uvicorn) or trio (hypercorn) (env PARLEY_BACKEND)")
    serve.add_argument("--registration", choices=["open", "invite", "closed"],
                       help="who may register agents (env PARLEY_REGISTRATION; default open)")
    serve.add_argument("--workers", type=_workers, default=os.environ.get("PARLEY_WORKERS", "1"),
                       help="hub processes sharing the port, each a node of the several-node design: more than "
                            "1 needs PostgreSQL and Redis (env PARLEY_WORKERS; default 1)")
    # A worker of --workers: the socket it serves on, its socket for the other workers (MCP sessions), and
    # the parent that started it (it stops when that is gone).
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--peer-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(run=_cmd_serve)

    migrate_cmd = commands.add_parser("migrate", help="apply database migrations (creates the data dir)")
    _store_options(migrate_cmd)
    migrate_cmd.set_defaults(run=_cmd_migrate)

    admin = commands.add_parser("admin", help="operator commands").add_subparsers(dest="admin_command", required=True)
    bootstrap = admin.add_parser("bootstrap", help="create the first admin agent; prints its API key once")
    _store_options(bootstrap)
    bootstrap.add_argument("--handle", default="admin", help="the admin agent's handle (default admin)")
    bootstrap.set_defaults(run=_cmd_bootstrap)

    call = commands.add_parser("call", help="call one operation over JSON-RPC and print its result as JSON")
    call.add_argument("method", help="operation name, e.g. auth.whoami")
    call.add_argument("params", nargs="?", help="JSON object of params (default: read stdin, or {})")
    call.add_argument("--url", default=os.environ.get("PARLEY_URL", "http://127.0.0.1:8080"),
                      help="the hub's base URL (env PARLEY_URL; default http://127.0.0.1:8080)")
    call.add_argument("--api-key", default=os.environ.get("PARLEY_API_KEY"),
                      help="API key or access token (env PARLEY_API_KEY)")
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    call.set_defaults(run=_cmd_call)

    mcp_stdio.add_command(commands)
    return parser


def failure_of(exc: BaseException, args: argparse.Namespace) -> CommandFailed | None:
    """What the user should read about `exc`, raised by the command of `args`, or None for a bug (whose
    traceback must show).

    Looks inside exception groups: a task group wraps what its tasks raise.
    """
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError

    from hub.config import ConfigError
    from protocol.errors import HubError

    if isinstance(exc, BaseExceptionGroup):
        found = [failure_of(inner, args) for inner in exc.exceptions]
        return next((failure for failure in found if failure is not None), None)
    if isinstance(exc, KeyboardInterrupt):
        return CommandFailed("interrupted", EXIT_INTERRUPTED)
    if isinstance(exc, CommandFailed):
        return exc
    if isinstance(exc, HubError):
        return CommandFailed(exc.message, EXIT_REFUSED)
    if isinstance(exc, ConfigError | ValidationError):
        return CommandFailed(f"invalid configuration: {exc}".splitlines()[0], EXIT_USAGE)
    if isinstance(exc, OperationalError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "no answer"
        store = f" {store_description(args.settings)}" if hasattr(args, "settings") else ""
        return CommandFailed(f"cannot use the database{store}: {reason}", EXIT_UNAVAILABLE)
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
        where = f" on {args.host}:{args.port}" if args.command == "serve" else ""
        return CommandFailed(f"cannot listen{where}: {(exc.strerror or str(exc)).lower()}", EXIT_UNAVAILABLE)
    return None


def _configure_logging() -> None:
    level = os.environ.get("PARLEY_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # At DEBUG these would log every SQL statement with its parameters, or every HTTP frame.
    for noisy in ("sqlalchemy", "alembic", "httpx", "httpcore", "hpack", "multipart", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        status = int(args.run(args))
        sys.stdout.flush()  # here, so a reader gone away is seen below and not at exit
        return status
    except BrokenPipeError:
        # The output's reader stopped reading (`parley call … | head`): end quietly, as `cat` would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except BaseException as exc:  # noqa: BLE001 - the command's boundary: foreseen failures become one line
        failure = failure_of(exc, args)
        if failure is None:
            raise
        if args.debug:
            traceback.print_exception(exc)
        print(f"parley: {failure.message}", file=sys.stderr)
        return failure.exit_code


if __name__ == "__main__":
    sys.exit(main())
