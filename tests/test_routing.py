"""`bridges.routing.IndexedRouter` finds, for every request, the route Starlette's linear search would."""

import re

import pytest
from starlette.routing import BaseRoute, Match

from bridges.app import create_app
from bridges.routing import IndexedRouter
from hub.config import Settings

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ODD_PATHS = ("/", "/api", "/api/", "/api/conversations/", "/mcp/", "/mcp/extra", "/docs/static/app.css",
             "/api/agents/me", "/api/agents/me/extra", "/nowhere", "/api/nowhere/at/all", "//api", "/health/")


def linear_match(routes: list[BaseRoute], scope: dict[str, object]) -> BaseRoute | None:
    """Starlette's own rule: the first route in order that matches fully."""
    return next((route for route in routes if route.matches(scope)[0] is Match.FULL), None)


def request_paths(router: IndexedRouter) -> list[str]:
    """Every route's path with its parameters filled in, the path with a segment more, and odd ones."""
    paths = list(ODD_PATHS)
    for route in router.routes:
        path = getattr(route, "path", None)
        if path:
            filled = re.sub(r"\{[^}]+\}", "x1", path)
            paths += [filled, filled + "/more", filled.rstrip("/") + "/"]
    return paths


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> IndexedRouter:
    data_dir = tmp_path_factory.mktemp("routing")
    app = create_app(Settings.from_env(database_url=f"sqlite:///{data_dir / 'hub.db'}", data_dir=str(data_dir)))
    assert isinstance(app.router, IndexedRouter)
    return app.router


def test_every_request_gets_the_route_a_linear_search_finds(router: IndexedRouter) -> None:
    checked = 0
    for path in request_paths(router):
        for method in METHODS:
            scope = {"type": "http", "path": path, "root_path": "", "method": method, "headers": []}
            found = router.full_match(scope)
            assert (found[0] if found else None) is linear_match(router.routes, scope), (method, path)
            checked += 1
    assert checked > 1000
