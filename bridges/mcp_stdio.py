"""`parley mcp`: the MCP server over stdio, for desktop MCP clients.

The agent is the one `PARLEY_API_KEY` names (an API key, or an access token while it lasts):

- `parley mcp --hub URL` speaks JSON-RPC to a running hub's `/rpc` (`mcp_remote.RemoteLink`); push
  and `wait_for_messages` follow the agent's events with the hub's `events.list` long poll.
- `parley mcp` without `--hub` opens the embedded store of this machine itself (the data dir or
  `PARLEY_DATABASE_URL`), as `parley serve` would. Another process serving the same SQLite file
  does not share its live event bus with this one: use `--hub` when a hub is running.

stdout carries only MCP; logs go to stderr. Like the other commands, this module imports the hub
and the MCP SDK only when the command runs, so `parley call` stays quick to start.
"""

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, Final

import anyio

if TYPE_CHECKING:
    from hub.config import Settings
    from mcp_tools.access import HubLink
    from mcp_tools.profiles import Profile

KEY_VARIABLE: Final = "PARLEY_API_KEY"
PROFILES: Final = ("messaging", "memory", "rag", "workflows", "all")
"""`mcp_tools.profiles.Profile`'s values (a test keeps them equal)."""


async def _serve(link: "HubLink", key: str, profile: "Profile") -> None:
    from mcp_tools.access import Access, fixed_credential
    from mcp_tools.server import build_server

    await link.connect(key)  # fail at start, with a message, rather than at the first tool call
    await build_server(Access(link, fixed_credential(key)), profile).run_stdio_async()


async def _serve_remote(url: str, key: str, profile: "Profile") -> None:
    import httpx

    from .mcp_remote import HTTP_TIMEOUT, RemoteLink

    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        await _serve(RemoteLink(url, http), key, profile)


async def _serve_embedded(settings: "Settings", key: str, profile: "Profile") -> None:
    from mcp_tools.access import InProcessLink

    from .app import running_hub, settle_heap

    async with running_hub(settings) as hub:
        settle_heap()
        await _serve(InProcessLink(hub), key, profile)


def run(args: argparse.Namespace) -> int:
    from hub.config import Settings
    from mcp_tools.profiles import Profile
    from protocol.errors import HubError

    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not key:
        print(f"parley mcp: set {KEY_VARIABLE} to the agent's API key", file=sys.stderr)
        return 2
    profile = Profile(args.tools)
    try:
        if args.hub:
            anyio.run(_serve_remote, args.hub, key, profile, backend=args.backend)
        else:
            settings = Settings.from_env(database_url=args.db, data_dir=args.data_dir)
            if not settings.database_url and not settings.sqlite_path().is_file():
                # A desktop client starts this in a directory of its own: a new, empty store there would
                # know no agent, and every key would be refused as invalid.
                print(f"parley mcp: no Parley store at {settings.sqlite_path()}: pass --data-dir (or PARLEY_DATA_DIR) "
                      "with the hub's data directory, --db, or --hub with a running hub's URL", file=sys.stderr)
                return 2
            anyio.run(_serve_embedded, settings, key, profile, backend=args.backend)
    except (HubError, BaseExceptionGroup) as exc:
        error = _single(exc)
        if not isinstance(error, HubError):
            raise
        print(f"parley mcp: {error.code.value}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested one-member groups (the hub's task group wraps what it raises)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def add_command(commands: Any) -> None:
    """The `parley mcp` subcommand (added by `bridges.cli.build_parser`)."""
    mcp = commands.add_parser(
        "mcp", help="serve MCP over stdio for a desktop client, as the agent of PARLEY_API_KEY",
        description="An MCP server on stdin/stdout. With --hub it talks to a running hub; without, it opens "
                    "the local embedded store. The agent is the one PARLEY_API_KEY belongs to.",
    )
    mcp.add_argument("--hub", default=os.environ.get("PARLEY_HUB_URL"),
                     help="URL of a running hub, e.g. http://127.0.0.1:8080 (env PARLEY_HUB_URL)")
    mcp.add_argument("--tools", choices=PROFILES, default=os.environ.get("PARLEY_MCP_TOOLS", "all"),
                     help="which tools to list (default: all; env PARLEY_MCP_TOOLS)")
    mcp.add_argument("--backend", choices=["asyncio", "trio"], default=os.environ.get("PARLEY_BACKEND", "asyncio"),
                     help="event loop to run on (env PARLEY_BACKEND; default asyncio)")
    mcp.add_argument("--db", help="database URL for the embedded store (env PARLEY_DATABASE_URL)")
    mcp.add_argument("--data-dir", help="data dir of the embedded store (env PARLEY_DATA_DIR)")
    mcp.set_defaults(run=run)
