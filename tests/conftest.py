"""Fixtures: the anyio backends, the stores, and real hub servers for both.

Every networked test runs four ways: {asyncio client + uvicorn hub, trio client + hypercorn-trio
hub} x {SQLite, PostgreSQL}. PostgreSQL runs when PARLEY_TEST_POSTGRES_URL names a reachable server
and is skipped with the reason otherwise.
"""

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from .client import Agent, HubClient
from .servers import (
    HubServer,
    create_postgres_database,
    drop_postgres_database,
    make_server,
    postgres_available,
    redis_unavailable,
)

# The suite keeps both cores busy: hubs it starts would otherwise embed at a crawl (benchmarks keep the default).
os.environ.setdefault("PARLEY_EMBEDDING_NICENESS", "0")

REQUIRE_SERVICES = "PARLEY_TEST_REQUIRE_SERVICES"
"""Set (by CI) to fail the run at once when PostgreSQL or Redis does not answer, instead of skipping their tests."""


def pytest_sessionstart(session: pytest.Session) -> None:
    if not os.environ.get(REQUIRE_SERVICES):
        return
    missing = list(dict.fromkeys(reason for reason in (postgres_available(), redis_unavailable()) if reason))
    if missing:
        pytest.exit(f"{REQUIRE_SERVICES} is set and a required service is missing: {'; '.join(missing)}",
                    returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `long` first (the rest keep their order): begun early, each overlaps the rest of
    the suite on the other workers instead of running alone at its end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(scope="session", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and (reason := postgres_available()) is not None:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    return request.param


ServerFactory = Callable[..., HubServer]

diagonal = pytest.mark.parametrize(("anyio_backend", "store_kind"), [("asyncio", "sqlite"), ("trio", "postgres")],
                                   indirect=True, scope="session")
"""For a slow test of its own hub whose subject is neither the event loop nor the store alone (a restart,
a crash): each loop and each store once, not every pair."""

postgres_only = pytest.mark.parametrize("store_kind", ["postgres"], indirect=True, scope="session")
"""For a test of what only a database server can do (lose its connections, and get them back)."""

sqlite_only = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True, scope="session")
"""For a test of what does not depend on the store (the Python client, a transport's framing): it
runs on both event loops, on SQLite only. Overrides the `store_kind` fixture's parameters."""


def _server_factory(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str, store_kind: str,
                    started: list[HubServer]) -> ServerFactory:
    def start(**settings: str) -> HubServer:
        server = make_server(anyio_backend, store_kind, tmp_path_factory.mktemp(f"hub-{anyio_backend}-{store_kind}"),
                             **settings)
        server.launch()
        started.append(server)
        return server

    return start


def _stop_all(started: list[HubServer]) -> None:
    for server in started:
        code = server.stop()
        if server.database_url:
            drop_postgres_database(server.database_url)
        assert code == 0, f"the hub exited with {code} on SIGTERM:\n{server.log()}"


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str, store_kind: str) -> Iterator[HubServer]:
    """One shared hub per backend and store, with default settings. Tests isolate by new agents."""
    started: list[HubServer] = []
    server = _server_factory(tmp_path_factory, anyio_backend, store_kind, started)()
    assert server.admin  # bootstrapped now, not inside the first test that needs it
    yield server
    _stop_all(started)


@pytest.fixture
def start_hub(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str, store_kind: str) -> Iterator[ServerFactory]:
    """Start a hub of the test's own (settings as keyword arguments, e.g. registration="invite")."""
    started: list[HubServer] = []
    yield _server_factory(tmp_path_factory, anyio_backend, store_kind, started)
    _stop_all(started)


@pytest.fixture
async def hub(hub_server: HubServer) -> AsyncIterator[HubClient]:
    async with HubClient(hub_server) as client:
        yield client


@pytest.fixture
async def alice(hub: HubClient) -> Agent:
    return await hub.register("alice")


@pytest.fixture
async def bob(hub: HubClient) -> Agent:
    return await hub.register("bob")


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def database_url(store_kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's store, for tests of the store itself (no hub): dropped after."""
    if store_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'parley.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)
