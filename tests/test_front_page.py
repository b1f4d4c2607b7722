"""GET /: a person who opens the hub in a browser gets a page saying what it is and where to go,
not a JSON-RPC error (issue 15, item 6). The page touches no store: both loops, SQLite only."""

import re

from .client import HubClient
from .conftest import ServerFactory, sqlite_only

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@sqlite_only
async def test_a_browser_opening_the_hub_gets_a_page_that_leads_to_the_api_and_to_mcp(hub: HubClient) -> None:
    response = await hub.http.get("/", headers=BROWSER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    links = re.findall(r'<a href="([^"]+)">', page)
    assert set(links) == {"/docs", "/openapi.json", "/health"}
    for link in links:  # and each one answers
        assert (await hub.http.get(link, headers=BROWSER)).status_code == 200, link
    assert f"<code>{hub.server.url}/mcp</code>" in page
    assert f"parley mcp --hub {hub.server.url} --tools messaging" in page
    assert (await hub.http.head("/")).status_code == 200


@sqlite_only
async def test_the_page_names_the_public_url_when_the_hub_has_one(start_hub: ServerFactory) -> None:
    server = start_hub(public_url="https://parley.example.com/")
    async with HubClient(server) as hub:
        page = (await hub.http.get("/", headers=BROWSER)).text
    assert "<code>https://parley.example.com/mcp</code>" in page
    assert "--hub https://parley.example.com " in page and server.url not in page


@sqlite_only
async def test_the_host_a_client_sends_is_shown_escaped_never_as_markup(hub: HubClient) -> None:
    page = (await hub.http.get("/", headers={**BROWSER, "host": "hub&'x"})).text
    assert "<code>http://hub&amp;&#x27;x/mcp</code>" in page
    assert "hub&'x" not in page


@sqlite_only
async def test_other_methods_on_the_front_page_and_unknown_paths_keep_the_json_envelope(hub: HubClient) -> None:
    # POST / was never JSON-RPC (that is /rpc); now that / is a page, POST there is 405 with Allow.
    response = await hub.http.post("/", json={"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"})
    assert response.status_code == 405
    assert sorted(response.headers["allow"].split(", ")) == ["GET", "HEAD"]
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = await hub.http.get("/nothing-here", headers=BROWSER)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "method_not_found")
    response = await hub.post_rpc({"jsonrpc": "2.0", "id": 1, "method": "no.such"})
    assert response.json()["error"]["data"]["code"] == "method_not_found"
