"""The REST bridge: routes from the operation table, status codes, the error envelope, headers."""

import httpx
import pytest

from .client import Agent, HubClient, unique_handle
from .conftest import ServerFactory


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def register(http: httpx.AsyncClient) -> dict:
    response = await http.post("/api/auth/register", json={"handle": unique_handle("rest")})
    assert response.status_code == 201
    return response.json()


async def test_register_answers_201_and_the_token_reads_me(hub: HubClient) -> None:
    agent = await register(hub.http)
    me = await hub.http.get("/api/auth/me", headers=bearer(agent["tokens"]["access_token"]))
    assert me.status_code == 200
    assert me.json()["agent"]["agent_id"] == agent["agent_id"]


async def test_an_api_key_works_in_x_api_key_and_as_bearer(hub: HubClient) -> None:
    agent = await register(hub.http)
    created = await hub.http.post("/api/keys", json={"name": "rest"}, headers=bearer(agent["tokens"]["access_token"]))
    assert created.status_code == 201
    key = created.json()["api_key"]
    assert (await hub.http.get("/api/keys", headers={"x-api-key": key})).status_code == 200
    listed = await hub.http.get("/api/keys", headers=bearer(key))
    assert [k["key_id"] for k in listed.json()["items"]] == [created.json()["key"]["key_id"]]
    assert key not in listed.text


async def test_path_params_reach_the_operation(hub: HubClient) -> None:
    agent = await register(hub.http)
    token = agent["tokens"]["access_token"]
    by_handle = await hub.http.get(f"/api/agents/{agent['handle']}", headers=bearer(token))
    assert by_handle.status_code == 200 and by_handle.json()["agent_id"] == agent["agent_id"]
    key = (await hub.http.post("/api/keys", json={"name": "gone"}, headers=bearer(token))).json()["key"]["key_id"]
    revoked = await hub.http.delete(f"/api/keys/{key}", headers=bearer(token))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None


async def test_query_params_are_typed_by_the_operation_model(hub: HubClient) -> None:
    agent = await register(hub.http)
    token = agent["tokens"]["access_token"]
    tag = unique_handle("t")[:30]
    await hub.http.patch("/api/agents/me", json={"tags": [tag]}, headers=bearer(token))
    found = await hub.http.get("/api/agents", params={"tag": tag, "limit": "5"}, headers=bearer(token))
    assert found.status_code == 200
    assert [p["agent_id"] for p in found.json()["items"]] == [agent["agent_id"]]
    bad = await hub.http.get("/api/agents", params={"limit": "many"}, headers=bearer(token))
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_request"
    assert bad.json()["error"]["details"]["errors"][0]["field"] == "limit"
    unknown = await hub.http.get("/api/agents", params={"colour": "blue"}, headers=bearer(token))
    assert unknown.status_code == 400


@pytest.mark.parametrize(
    "method,path,status,code",
    [
        ("GET", "/api/auth/me", 401, "unauthorized"),
        ("GET", "/api/no/such/route", 404, "method_not_found"),
        ("PUT", "/api/auth/me", 405, "method_not_allowed"),
        # A literal path is not taken for a parameterised one that has the method (a workflow "requests").
        ("PUT", "/api/workflows/requests", 405, "method_not_allowed"),
    ],
)
async def test_errors_use_the_envelope_and_their_status(hub: HubClient, method: str, path: str, status: int,
                                                         code: str) -> None:
    response = await hub.http.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert set(response.json()["error"]) == {"code", "message", "details"}


async def test_a_wrong_method_is_405_with_every_allowed_method_in_allow(hub: HubClient) -> None:
    response = await hub.http.request("PUT", "/api/messages/msg_0")
    assert response.status_code == 405
    assert sorted(method.strip() for method in response.headers["allow"].split(",")) == [
        "DELETE", "GET", "HEAD", "PATCH"]
    head = await hub.http.head("/api/messages/msg_0")
    assert head.status_code == 401 and head.content == b""


async def test_unauthorized_carries_www_authenticate(hub: HubClient) -> None:
    response = await hub.http.get("/api/auth/me", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_missing_scope_is_403(hub: HubClient) -> None:
    agent = await register(hub.http)
    token = agent["tokens"]["access_token"]
    narrow = (await hub.http.post("/api/keys", json={"name": "ro", "scopes": ["agents:read"]},
                                  headers=bearer(token))).json()["api_key"]
    response = await hub.http.post("/api/keys", json={"name": "x"}, headers=bearer(narrow))
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


async def test_a_taken_handle_is_409_and_changes_nothing(hub: HubClient) -> None:
    agent = await register(hub.http)
    again = await hub.http.post("/api/auth/register", json={"handle": agent["handle"], "display_name": "other"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    profile = await hub.http.get(f"/api/agents/{agent['handle']}", headers=bearer(agent["tokens"]["access_token"]))
    assert profile.json()["display_name"] is None


async def test_a_body_that_is_not_json_is_415_or_400(hub: HubClient) -> None:
    agent = await register(hub.http)
    headers = bearer(agent["tokens"]["access_token"])
    as_text = await hub.http.patch("/api/agents/me", content=b'{"description": "x"}',
                                   headers={**headers, "content-type": "text/plain"})
    assert as_text.status_code == 415 and as_text.json()["error"]["code"] == "unsupported_media_type"
    broken = await hub.http.patch("/api/agents/me", content=b"{nope",
                                  headers={**headers, "content-type": "application/json"})
    assert broken.status_code == 400
    not_object = await hub.http.patch("/api/agents/me", json=[1, 2], headers=headers)
    assert not_object.status_code == 400


async def test_a_body_over_the_limit_is_413(hub: HubClient) -> None:
    agent = await register(hub.http)
    big = {"description": "x" * (1024 * 1024 + 1)}
    response = await hub.http.patch("/api/agents/me", json=big, headers=bearer(agent["tokens"]["access_token"]))
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


async def test_a_query_string_over_the_limit_is_413(hub: HubClient) -> None:
    agent = await register(hub.http)
    response = await hub.http.get("/api/agents", params={"q": "x" * 9000},
                                  headers=bearer(agent["tokens"]["access_token"]))
    assert response.status_code == 413


async def test_rate_limits_answer_429_with_retry_after_and_ratelimit_headers(start_hub: ServerFactory) -> None:
    server = start_hub(rate_read="2:0.01", rate_write="3:0.01")
    async with HubClient(server) as hub:
        agent = await register(hub.http)
        headers = bearer(agent["tokens"]["access_token"])
        reads = [(await hub.http.get("/api/auth/me", headers=headers)) for _ in range(3)]
        writes = [(await hub.http.patch("/api/agents/me", headers=headers, json={"description": f"v{i}"}))
                  for i in range(4)]
    for responses, limit in ((reads, 2), (writes, 3)):  # each class reports its own bucket
        assert [r.status_code for r in responses] == [200] * limit + [429]
        assert ([r.headers["x-ratelimit-remaining"] for r in responses]
                == [str(n) for n in range(limit - 1, -1, -1)] + ["0"])
        assert all(r.headers["x-ratelimit-limit"] == str(limit) for r in responses)
        # A bucket refilling at 0.01/s is full again in 100 s per token spent.
        resets = [int(r.headers["x-ratelimit-reset"]) for r in responses]
        assert resets[:limit] == [100 * n for n in range(1, limit + 1)]
        limited = responses[-1]
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["x-ratelimit-reset"] == limited.headers["retry-after"]
        assert limited.json()["error"]["details"]["retry_after"] > 0


async def test_openapi_document_lists_every_operation_once(hub: HubClient) -> None:
    document = (await hub.http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    operation_ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert len(operation_ids) == len(set(operation_ids))
    assert {"auth.register", "auth.whoami", "keys.create", "agents.search"} <= set(operation_ids)


async def test_openapi_describes_the_upload_and_the_streamed_run_as_rest_takes_them(hub: HubClient) -> None:
    """`POST /api/files` takes the file as multipart (a `file` part), and a run started with `?stream=true`
    answers with its events as SSE: both in the document, so `/docs` can try them."""
    paths = (await hub.http.get("/openapi.json")).json()["paths"]
    upload = paths["/api/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file"] and upload["properties"]["file"]["format"] == "binary"
    assert "`name`" in upload["description"] and "content_base64" not in upload["description"]
    run = paths["/api/workflows/{workflow_id}/runs"]["post"]
    stream = next(parameter for parameter in run["parameters"] if parameter["name"] == "stream")
    assert (stream["in"], stream["schema"]) == ("query", {"type": "boolean"})
    assert "text/event-stream" in run["responses"]["200"]["content"]
    assert all(p["in"] != "query" for p in paths["/api/auth/token"]["post"]["parameters"])  # a body's fields stay in it


async def test_docs_page_and_its_assets_are_served_by_the_hub(hub: HubClient) -> None:
    page = await hub.http.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    bundle = await hub.http.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000


async def test_a_body_of_whitespace_is_not_json_but_no_body_is_no_params(hub: HubClient, alice: Agent) -> None:
    group = await hub.call("conversations.create_group", {"title": "g"}, token=alice.access_token)
    path = f"/api/conversations/{group['conversation_id']}/leave"
    headers = {**bearer(alice.access_token), "content-type": "application/json"}
    whitespace = await hub.http.post(path, content=b"\n", headers=headers)
    assert whitespace.status_code == 400 and whitespace.json()["error"]["code"] == "invalid_request"
    assert (await hub.http.post(path, content=b"", headers=headers)).status_code == 200


async def test_an_idempotency_key_used_for_another_message_is_409_naming_the_header(hub: HubClient,
                                                                                     alice: Agent) -> None:
    """Over REST a send's `client_msg_id` is its `Idempotency-Key` header: the refusal says so, since a
    REST caller never wrote a `client_msg_id`."""
    group = await hub.call("conversations.create_group", {"title": "g"}, token=alice.access_token)
    path = f"/api/conversations/{group['conversation_id']}/messages"
    headers = {**bearer(alice.access_token), "idempotency-key": "hello-1"}
    first = await hub.http.post(path, json={"body": "hello"}, headers=headers)
    assert (await hub.http.post(path, json={"body": "hello"}, headers=headers)).json() == first.json()
    other = await hub.http.post(path, json={"body": "something else"}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "conflict"
    assert "Idempotency-Key" in other.json()["error"]["message"]
