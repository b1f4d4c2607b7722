"""Fixtures: the anyio backends, the stores, and real hub servers for both.

Every networked test runs four ways: {asyncio client + uvicorn hub, trio client + hypercorn-trio
hub} x {SQLite, PostgreSQL}. PostgreSQL runs when PARLEY_TEST_POSTGRES_URL names a reachable server
and is skipped with the reason otherwise.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from .client import Agent, HubClient
from .servers import HubServer, drop_postgres_database, make_server, postgres_available


@pytest.fixture(scope="session", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and (reason := postgres_available()) is not None:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    return request.param


ServerFactory = Callable[..., HubServer]


def _server_factory(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str, store_kind: str,
                    started: list[HubServer]) -> ServerFactory:
    def start(**settings: str) -> HubServer:
        server = make_server(anyio_backend, store_kind, tmp_path_factory.mktemp(f"hub-{anyio_backend}-{store_kind}"),
                             **settings)
        server.start()
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
    yield _server_factory(tmp_path_factory, anyio_backend, store_kind, started)()
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
