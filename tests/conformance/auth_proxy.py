"""A pass-through HTTP proxy that adds `Authorization: Bearer <key>` to every request.

The MCP conformance suite connects without credentials and has no option to send a header, while the
hub's `/mcp` requires one (401 otherwise). This proxy sits in front of the hub for the suite only: it
forwards method, path, query, body and headers unchanged (the `Host` and `Origin` headers too, so the
suite's DNS-rebinding checks reach the hub's own protection), adds the credential, and streams the
answer back (SSE included). Not part of Parley; used by `run_conformance.py`.

    python tests/conformance/auth_proxy.py --upstream http://127.0.0.1:8080 --port 8081 --key prl_...
"""

import argparse
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "content-length"}
OWN_HEADERS = {"date", "server"}
"""Response headers this proxy's own server sets; the hub's copies are dropped, not doubled."""


def make_app(upstream: str, key: str) -> object:
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(30, read=None))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        # Values as the hub's own server would parse them (RFC 9110: optional whitespace is not part of a value).
        headers = [(k, v.strip()) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        if not any(k.lower() == "authorization" for k, _ in headers):
            headers.append(("authorization", f"Bearer {key}"))
        upstream_request = client.build_request(
            request.method, request.url.path, params=request.url.query or None, headers=headers,
            content=await request.body(),
        )
        response = await client.send(upstream_request, stream=True)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in response.aiter_raw():
                yield chunk

        answer = StreamingResponse(
            body(), status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP | OWN_HEADERS},
            background=BackgroundTask(response.aclose),
        )
        await answer(scope, receive, send)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.upstream, args.key), host="127.0.0.1", port=args.port, log_level="warning",  # type: ignore[arg-type]
                timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
