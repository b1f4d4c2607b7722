"""/docs: the OpenAPI document rendered by Swagger UI, its assets served by the hub itself (from the
swagger-ui-py package), so the page works with no outside network."""

from pathlib import Path

import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = Path(swagger_ui.__file__).parent / "static"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Parley API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.onload = () => {
      window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
    };
  </script>
</body>
</html>
"""


async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


def docs_routes() -> list[Route | Mount]:
    return [
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=ASSETS), name="docs-static"),
    ]
