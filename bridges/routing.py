"""Finding a request's route among the ~90 the hub mounts, without trying them all."""

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Router
from starlette.types import Receive, Scope, Send


def _key(path: str) -> str:
    """A path's first two segments: `/api/conversations` for `/api/conversations/cnv_…/messages`."""
    return "/".join(path.split("/", 3)[:3])


def _route_key(route: BaseRoute) -> str | None:
    """The key of the paths `route` can match; None if it can match paths of any key."""
    path = getattr(route, "path", "")
    key = _key(path)
    return key if path.startswith("/") and "{" not in key else None


class IndexedRouter(Router):
    """Starlette's router, with HTTP requests first offered only to the routes that can match them.

    Starlette tries every route in order, and the busy ones came late: a message sent over REST was
    matched against 62 routes before its own, 16% of the hub's time for that request (py-spy). Routes
    are indexed by the first two segments of their path when those are literal; the others (a parameter
    in the first two segments) are offered every request. A request tries its key's routes and those,
    in the original order, so the first full match is the one Starlette would find
    (tests/test_routing.py checks this on the hub's own routes). Without a full match, Starlette's own
    search runs: its 405s, slash redirects and 404 are unchanged.
    """

    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(list(routes), **kwargs)
        keys = [_route_key(route) for route in self.routes]
        self._anywhere = [route for route, key in zip(self.routes, keys, strict=True) if key is None]
        self._by_key = {key: [route for route, its in zip(self.routes, keys, strict=True) if its in (key, None)]
                        for key in set(keys) if key is not None}

    def full_match(self, scope: Scope) -> tuple[BaseRoute, Scope] | None:
        """The first route that fully matches an HTTP request, and what it adds to the scope."""
        for route in self._by_key.get(_key(scope["path"]), self._anywhere):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return route, child_scope
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.full_match(scope) if scope["type"] == "http" else None
        if found is None:
            await super().app(scope, receive, send)  # Starlette's own search: its 405s, redirects and 404
            return
        route, child_scope = found
        scope.setdefault("router", self)
        scope["route"] = route
        scope.update(child_scope)
        await route.handle(scope, receive, send)
