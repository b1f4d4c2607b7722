"""A hub in the test process: its store in a temporary directory (or a fresh PostgreSQL database),
dispatched to directly, on a clock the test may move (`ManualClock`): for what takes hours to happen
(credential expiry, schedules) and for the MCP server built in process over it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from bridges.app import running_hub
from hub.clock import Clock
from hub.config import RateLimit, Settings
from hub.core import Hub
from hub.principal import Principal

from .client import unique_handle
from .servers import create_postgres_database, drop_postgres_database

FAST_TEST_SETTINGS: Final = {
    "argon2_memory_kib": 8192,
    "argon2_time_cost": 1,
    "rate_auth": RateLimit(burst=100000, per_second=100000),
    "rate_read": RateLimit(burst=100000, per_second=100000),
    "rate_write": RateLimit(burst=100000, per_second=100000),
    "rate_upload": RateLimit(burst=100000, per_second=100000),
    "embedding_niceness": 0,  # the suite keeps both cores busy: a lowered embedding would crawl
}


class ManualClock(Clock):
    """The real clock, moved forward by `advance` (wall and monotonic time alike)."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=self._offset)

    def monotonic(self) -> float:
        return super().monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds


@dataclass
class LocalAgent:
    agent_id: str
    handle: str
    access_token: str
    refresh_token: str = ""


@dataclass
class LocalHub:
    """A hub in this process."""

    hub: Hub

    async def agent(self, stem: str, **params: Any) -> LocalAgent:
        result = await self.hub.dispatch(Principal.anonymous("test"), "auth.register",
                                         {"handle": unique_handle(stem), **params})
        tokens = result["tokens"]
        return LocalAgent(result["agent_id"], result["handle"], tokens["access_token"], tokens["refresh_token"])

    async def api_key(self, agent: LocalAgent, **params: Any) -> tuple[str, str]:
        """A new API key of `agent`: (key, key id)."""
        created = await self.as_agent(agent, "keys.create", {"name": "test", **params})
        return created["api_key"], created["key"]["key_id"]

    async def as_agent(self, agent: LocalAgent, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run an operation as `agent` through the hub directly."""
        return await self.call(agent.access_token, name, params)

    async def call(self, credential: str | None, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run an operation with `credential` (None: anonymously), authenticated as a transport would."""
        return await self.hub.dispatch(await self.hub.authenticate(credential, "test"), name, params)


@asynccontextmanager
async def local_hub(data_dir: Path, store_kind: str, clock: Clock | None = None,
                    **settings: Any) -> AsyncIterator[LocalHub]:
    """A hub in this process, with the tests' fast settings plus `settings`, on `clock` if given."""
    database_url = create_postgres_database() if store_kind == "postgres" else ""
    configured = Settings(data_dir=data_dir, database_url=database_url, **{**FAST_TEST_SETTINGS, **settings})
    try:
        async with running_hub(configured, clock) as hub:
            yield LocalHub(hub)
    finally:
        if database_url:
            drop_postgres_database(database_url)
