"""Triggers and webhooks against real hubs and a real HTTP receiver in this process.

The receiver (`tests.test_outbound.LocalServer`, threads on 127.0.0.1) answers as each test tells it:
200, 500, or not before the hub's time limit. Every delivery it gets is checked as an integrator's code
would check it, with the `standardwebhooks` library. The hub here may reach 127.0.0.1 (PARLEY_OUTBOUND_ALLOW),
gives up on a request after 1 s, retries after 0.2 s (doubling) for 2.5 s; the shared hub (no allow-list)
shows that private URLs are refused.
"""

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .client import Agent, HubClient
from .conftest import _server_factory, _stop_all
from .messaging import WAIT, direct, raises_code, send
from .servers import HubServer, drop_postgres_database, postgres_available, redis_unavailable, start_nodes
from .test_outbound import LocalServer, Received, respond

pytestmark = pytest.mark.anyio

HOOK_SETTINGS = {"outbound_allow": "127.0.0.1", "outbound_timeout_seconds": "1", "webhook_retry_seconds": "0.2",
                 "webhook_retry_window_seconds": "2.5", "job_poll_seconds": "0.5"}
DOUBLE = {"name": "Double", "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
          "nodes": [{"id": "double", "type": "transform", "value": "{{ input.x * 2 }}"}]}


@pytest.fixture(scope="session")
def hook_server(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str, store_kind: str) -> Iterator[HubServer]:
    started: list[HubServer] = []
    yield _server_factory(tmp_path_factory, anyio_backend, store_kind, started)(**HOOK_SETTINGS)
    _stop_all(started)


@pytest.fixture
async def hooks(hook_server: HubServer) -> Any:
    async with HubClient(hook_server) as client:
        yield client


class Receiver:
    """Answers each request with the next of `answers` (the last one repeats): a status, or "hang" (no answer
    within the hub's time limit)."""

    def __init__(self, *answers: int | str) -> None:
        self.answers = list(answers) or [200]
        self.lock = threading.Lock()
        self.server = LocalServer(self._answer)

    def _answer(self, request: Received, conn: socket.socket) -> None:
        with self.lock:
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == "hang":
            time.sleep(1.5)
            return
        respond(conn, int(answer), body=b"thanks" if answer == 200 else b"try later")

    def __enter__(self) -> "Receiver":
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.server.url("/hooks/parley")

    @property
    def requests(self) -> list[Received]:
        return self.server.requests

    async def wait_for(self, count: int) -> list[Received]:
        with anyio.fail_after(WAIT):
            while len(self.requests) < count:
                await anyio.sleep(0.02)
        return self.requests


def verified(secret: str, request: Received) -> Any:
    """The delivery's body, once its signature checks out with `secret` (as a receiver would check it)."""
    return Webhook(secret).verify(request.body, request.headers)


async def create(hub: HubClient, agent: Agent, url: str, event_types: list[str]) -> dict[str, Any]:
    return await hub.call("webhooks.create", {"url": url, "event_types": event_types}, token=agent.access_token)


async def deliveries(hub: HubClient, agent: Agent, webhook_id: str, settled: int = 1) -> list[dict[str, Any]]:
    """The endpoint's deliveries, once `settled` of them are no longer pending."""
    with anyio.fail_after(WAIT):
        while True:
            page = await hub.call("webhooks.deliveries", {"webhook_id": webhook_id}, token=agent.access_token)
            if sum(item["status"] != "pending" for item in page["items"]) >= settled:
                return page["items"]  # type: ignore[no-any-return]
            await anyio.sleep(0.05)


async def a_message_to(hub: HubClient, alice: Agent, bob: Agent, body: str = "hello hooks") -> dict[str, Any]:
    return await send(hub, bob, await direct(hub, bob, alice), body)


# -- signed deliveries ------------------------------------------------------------------------------------


async def test_a_subscribed_event_arrives_signed_as_standard_webhooks_asks(hooks: HubClient) -> None:
    alice, bob = await hooks.register("alice"), await hooks.register("bob")
    with Receiver(200) as receiver:
        created = await create(hooks, alice, receiver.url, ["message.created"])
        assert created["secret"].startswith("whsec_") and "secret" not in created["webhook"]
        webhook_id = created["webhook"]["webhook_id"]
        await a_message_to(hooks, alice, bob)
        [request] = await receiver.wait_for(1)
        body = verified(created["secret"], request)
        assert body["type"] == "message.created" and body["data"]["message"]["body"] == "hello hooks"
        assert request.method == "POST" and request.target == "/hooks/parley"
        with pytest.raises(WebhookVerificationError):
            verified(created["secret"], Received(request.method, request.target, request.headers,
                                                 request.body.replace(b"hello", b"jello")))
        [delivery] = await deliveries(hooks, alice, webhook_id)
        assert delivery["delivery_id"] == request.headers["webhook-id"]
        assert delivery["status"] == "delivered" and delivery["event_type"] == "message.created"
        [attempt] = delivery["attempts"]
        assert attempt["status_code"] == 200 and attempt["error"] is None and attempt["response"] == "thanks"
        assert not attempt["manual"] and attempt["duration_ms"] >= 0
        await a_message_to(hooks, alice, bob, "second")
        second = (await receiver.wait_for(2))[1]
        assert verified(created["secret"], second)["data"]["message"]["body"] == "second"
    assert await hooks.call("webhooks.get", {"webhook_id": webhook_id}, token=alice.access_token) == created["webhook"]


async def test_a_failing_receiver_is_retried_with_backoff_until_it_recovers(hooks: HubClient) -> None:
    alice, bob = await hooks.register("alice"), await hooks.register("bob")
    with Receiver(500, "hang", 200) as receiver:
        created = await create(hooks, alice, receiver.url, ["message.*"])
        await a_message_to(hooks, alice, bob)
        requests = await receiver.wait_for(3)
        [delivery] = await deliveries(hooks, alice, created["webhook"]["webhook_id"])
    assert delivery["status"] == "delivered"
    first, second, third = delivery["attempts"]
    assert (first["status_code"], first["response"]) == (500, "try later")
    assert "500" in first["error"]
    assert second["status_code"] is None and "1 s" in second["error"]  # no complete response within 1 s
    assert (third["status_code"], third["error"]) == (200, None)
    assert second["duration_ms"] >= 900
    # Every attempt is the same delivery (one webhook-id), signed afresh.
    assert len({request.headers["webhook-id"] for request in requests}) == 1
    assert all(verified(created["secret"], request)["type"] == "message.created" for request in requests)
    # Backoff: 0.2 s after the first failure, then 0.4 s after the second.
    at = [datetime.fromisoformat(attempt["at"]).timestamp() for attempt in delivery["attempts"]]
    assert at[1] - at[0] >= 0.2 and at[2] - at[1] >= 1.0 + 0.4


async def test_an_endpoint_failing_for_a_whole_window_is_disabled_and_can_be_redelivered_to(hooks: HubClient
                                                                                            ) -> None:
    alice, bob = await hooks.register("alice"), await hooks.register("bob")
    with Receiver(500) as receiver:
        created = await create(hooks, alice, receiver.url, ["message.created"])
        webhook_id = created["webhook"]["webhook_id"]
        message = await a_message_to(hooks, alice, bob)
        [delivery] = await deliveries(hooks, alice, webhook_id)
        assert delivery["status"] == "failed"
        tried = len(delivery["attempts"])  # 4: at 0, 0.2, 0.6 and 1.4 s, unless the machine is very slow
        assert tried >= 3 and [attempt["status_code"] for attempt in delivery["attempts"]] == [500] * tried
        webhook = await hooks.call("webhooks.get", {"webhook_id": webhook_id}, token=alice.access_token)
        assert not webhook["enabled"] and "every delivery failed" in webhook["disabled_reason"]
        assert "500" in webhook["disabled_reason"]
        # Nothing more is sent to a disabled endpoint, and it cannot be redelivered to until enabled.
        await a_message_to(hooks, alice, bob, "while disabled")
        with raises_code("conflict"):
            await hooks.call("webhooks.redeliver", {"webhook_id": webhook_id, "delivery_id": delivery["delivery_id"]},
                             token=alice.access_token)
        receiver.answers = [200]
        # Bob deletes his message meanwhile: a delivery sends its event as it stands, so never the erased body.
        await hooks.call("messages.delete", {"message_id": message["message_id"]}, token=bob.access_token)
        enabled = await hooks.call("webhooks.update", {"webhook_id": webhook_id, "enabled": True},
                                   token=alice.access_token)
        assert enabled["enabled"] and enabled["disabled_reason"] is None
        queued = await hooks.call("webhooks.redeliver", {"webhook_id": webhook_id,
                                                         "delivery_id": delivery["delivery_id"]},
                                  token=alice.access_token)
        assert queued == {"delivery_id": delivery["delivery_id"], "webhook_id": webhook_id, "status": "pending"}
        requests = await receiver.wait_for(tried + 1)
        assert requests[-1].headers["webhook-id"] == delivery["delivery_id"]
        redelivered = verified(created["secret"], requests[-1])["data"]["message"]
        assert redelivered["message_id"] == message["message_id"] and redelivered["body"] is None
        assert b"hello hooks" not in requests[-1].body
        [again] = await deliveries(hooks, alice, webhook_id)
    assert again["status"] == "delivered"
    assert [a["manual"] for a in again["attempts"]] == [False] * tried + [True]
    assert len(receiver.requests) == tried + 1  # "while disabled" was never sent


async def test_a_rotated_secret_signs_beside_the_new_one_for_its_grace(hooks: HubClient) -> None:
    alice, bob = await hooks.register("alice"), await hooks.register("bob")
    with Receiver(200) as receiver:
        created = await create(hooks, alice, receiver.url, ["message.created"])
        webhook_id = created["webhook"]["webhook_id"]
        rotated = await hooks.call("webhooks.rotate_secret", {"webhook_id": webhook_id, "grace_seconds": 3600},
                                   token=alice.access_token)
        assert rotated["secret"] != created["secret"] and rotated["webhook"]["previous_secret_expires_at"]
        await a_message_to(hooks, alice, bob, "during grace")
        [during] = await receiver.wait_for(1)
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert verified(created["secret"], during) == verified(rotated["secret"], during)
        final = await hooks.call("webhooks.rotate_secret", {"webhook_id": webhook_id, "grace_seconds": 0},
                                 token=alice.access_token)
        assert final["webhook"]["previous_secret_expires_at"] is None
        await a_message_to(hooks, alice, bob, "after")
        after = (await receiver.wait_for(2))[1]
    assert verified(final["secret"], after)["data"]["message"]["body"] == "after"
    for old in (created["secret"], rotated["secret"]):
        with pytest.raises(WebhookVerificationError):
            verified(old, after)


async def test_a_secret_is_kept_sealed_and_never_logged(hooks: HubClient, hook_server: HubServer) -> None:
    alice = await hooks.register("alice")
    created = await create(hooks, alice, "http://127.0.0.1:9/never", ["execution.*"])
    rotated = await hooks.call("webhooks.rotate_secret", {"webhook_id": created["webhook"]["webhook_id"]},
                               token=alice.access_token)
    needles = [secret.removeprefix("whsec_").encode() for secret in (created["secret"], rotated["secret"])]
    if hook_server.sqlite_path is not None:
        stored = b"".join(path.read_bytes() for path in hook_server.sqlite_path.parent.glob("parley.db*"))
    else:
        with psycopg.connect(hook_server.database_url.replace("+psycopg", "")) as conn:
            stored = "".join(row[0] for row in conn.execute("SELECT webhook_endpoints::text FROM webhook_endpoints"))\
                .encode()
        assert created["webhook"]["webhook_id"].encode() in stored
    for needle in needles:
        assert needle not in stored
        assert needle.decode() not in hook_server.log()


# -- who may do what --------------------------------------------------------------------------------------


async def test_a_private_url_is_refused_without_the_allow_setting(hub: HubClient, alice: Agent) -> None:
    for url, reason in [("http://127.0.0.1:8080/hook", "loopback"), ("http://10.1.2.3/hook", "private"),
                        ("http://169.254.169.254/latest", "metadata"), ("ftp://example.com/x", "scheme")]:
        with raises_code("invalid_request") as caught:
            await hub.call("webhooks.create", {"url": url, "event_types": ["*"]}, token=alice.access_token)
        assert caught.value.details == {"field": "url", "reason": reason}
    assert (await hub.call("webhooks.list", {}, token=alice.access_token))["items"] == []
    workflow = await hub.call("workflows.create", DOUBLE, token=alice.access_token)
    with raises_code("invalid_request") as caught:
        await hub.call("workflows.trigger", {"workflow_id": workflow["workflow_id"], "input": {"x": 1},
                                             "webhook_url": "http://[::1]:9/x"}, token=alice.access_token)
    assert caught.value.details["field"] == "webhook_url"
    assert (await hub.call("executions.list", {}, token=alice.access_token))["items"] == []


async def test_unknown_event_types_are_refused(hooks: HubClient) -> None:
    alice = await hooks.register("alice")
    for bad in (["message.sent"], ["teleport.*"], ["message"], ["Message.created"]):
        with raises_code("invalid_request"):
            await create(hooks, alice, "http://127.0.0.1:9/x", bad)
    made = await create(hooks, alice, "http://127.0.0.1:9/x", ["execution.*", "execution.*", "message.created"])
    assert made["webhook"]["event_types"] == ["execution.*", "message.created"]


async def test_another_agent_learns_nothing_of_a_webhook(hooks: HubClient) -> None:
    alice, bob = await hooks.register("alice"), await hooks.register("bob")
    created = await create(hooks, alice, "http://127.0.0.1:9/x", ["execution.*"])
    webhook_id = created["webhook"]["webhook_id"]
    for method, params in [("webhooks.get", {}), ("webhooks.update", {"description": "mine"}),
                           ("webhooks.rotate_secret", {}), ("webhooks.deliveries", {}), ("webhooks.delete", {}),
                           ("webhooks.redeliver", {"delivery_id": "whd_" + "0" * 26})]:
        with raises_code("not_found"):
            await hooks.call(method, {"webhook_id": webhook_id, **params}, token=bob.access_token)
    assert (await hooks.call("webhooks.list", {}, token=bob.access_token))["items"] == []
    assert await hooks.call("webhooks.get", {"webhook_id": webhook_id}, token=alice.access_token) == created["webhook"]
    await hooks.call("webhooks.delete", {"webhook_id": webhook_id}, token=alice.access_token)
    with raises_code("not_found"):
        await hooks.call("webhooks.get", {"webhook_id": webhook_id}, token=alice.access_token)


# -- triggers ---------------------------------------------------------------------------------------------


async def test_an_api_key_with_the_trigger_scope_starts_a_run_and_reads_its_status(hooks: HubClient) -> None:
    alice, bob = await hooks.register("alice"), await hooks.register("bob")
    workflow = await hooks.call("workflows.create", DOUBLE, token=alice.access_token)
    key = await hooks.api_key(alice, scopes=["workflows:trigger"])
    http = hooks.http
    started = await http.post(f"/api/trigger/{workflow['workflow_id']}", json={"input": {"x": 21}},
                              headers={"x-api-key": key})
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]
    with anyio.fail_after(WAIT):
        while (status := (await http.get(f"/api/trigger/status/{execution_id}",
                                         headers={"authorization": f"Bearer {key}"})).json())["status"] != "completed":
            await anyio.sleep(0.05)
    assert status["output"] == 42
    assert status["trigger"] == "api_key"
    # The key does only that: no other operation, and nobody else's workflow.
    refused = await http.post(f"/api/workflows/{workflow['workflow_id']}/runs", json={}, headers={"x-api-key": key})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    bob_key = await hooks.api_key(bob, scopes=["workflows:trigger"])
    other = await http.post(f"/api/trigger/{workflow['workflow_id']}", json={"input": {"x": 1}},
                            headers={"x-api-key": bob_key})
    assert other.status_code == 404
    assert (await http.get(f"/api/trigger/status/{execution_id}", headers={"x-api-key": bob_key})).status_code == 404


async def test_a_key_without_the_trigger_scope_is_forbidden(hooks: HubClient) -> None:
    alice = await hooks.register("alice")
    workflow = await hooks.call("workflows.create", DOUBLE, token=alice.access_token)
    key = await hooks.api_key(alice, scopes=["workflows:run", "workflows:read"])
    response = await hooks.http.post(f"/api/trigger/{workflow['workflow_id']}", json={"input": {"x": 1}},
                                     headers={"x-api-key": key})
    assert response.status_code == 403
    assert response.json()["error"]["details"] == {"required_scope": "workflows:trigger"}
    assert (await hooks.http.post(f"/api/trigger/{workflow['workflow_id']}", json={})).status_code == 401
    assert (await hooks.call("executions.list", {}, token=alice.access_token))["items"] == []


async def test_a_triggered_run_reports_its_result_to_its_webhook_url(hooks: HubClient) -> None:
    alice, bob = await hooks.register("alice"), await hooks.register("bob")
    workflow = await hooks.call("workflows.create", DOUBLE, token=alice.access_token)
    key = await hooks.api_key(alice, scopes=["workflows:trigger"])
    with Receiver(200) as receiver:
        response = await hooks.http.post(f"/api/trigger/{workflow['workflow_id']}", headers={"x-api-key": key},
                                         json={"input": {"x": 4}, "webhook_url": receiver.url})
        assert response.status_code == 202, response.text
        first = response.json()
        assert first["webhook_secret"].startswith("whsec_")
        [request] = await receiver.wait_for(1)
        body = verified(first["webhook_secret"], request)
        assert body["type"] == "execution.completed"
        assert body["data"]["execution"]["execution_id"] == first["execution_id"]
        assert body["data"]["execution"]["output"] is not None
        # The same URL again: the same endpoint, no new secret; other events never go to it.
        again = (await hooks.http.post(f"/api/trigger/{workflow['workflow_id']}", headers={"x-api-key": key},
                                       json={"input": {"x": 5}, "webhook_url": receiver.url})).json()
        assert again["webhook_id"] == first["webhook_id"] and again["webhook_secret"] is None
        replayed = await hooks.http.post(f"/api/trigger/{workflow['workflow_id']}", headers={
            "x-api-key": key, "idempotency-key": "once"}, json={"input": {"x": 5}, "webhook_url": receiver.url})
        retried = await hooks.http.post(f"/api/trigger/{workflow['workflow_id']}", headers={
            "x-api-key": key, "idempotency-key": "once"}, json={"input": {"x": 5}, "webhook_url": receiver.url})
        assert retried.json() == {**replayed.json(), "webhook_secret": None}
        assert retried.json()["webhook_id"] == first["webhook_id"]
        await a_message_to(hooks, alice, bob)
        ends = {verified(first["webhook_secret"], request)["data"]["execution"]["execution_id"]
                for request in (await receiver.wait_for(3))[1:]}
        assert ends == {again["execution_id"], replayed.json()["execution_id"]}
        await hooks.call("workflows.run", {"workflow_id": workflow["workflow_id"], "input": {"x": 6}},
                         token=alice.access_token)  # not triggered with the URL: not reported to it
        await anyio.sleep(1.0)
        assert len(receiver.requests) == 3  # one per run triggered with the URL (the retried one is the same run)
    listed = await hooks.call("webhooks.list", {}, token=alice.access_token)
    assert [item["webhook_id"] for item in listed["items"]] == [first["webhook_id"]]
    assert listed["items"][0]["event_types"] == []


async def test_rest_routes_take_a_key_in_either_header(hooks: HubClient) -> None:
    alice = await hooks.register("alice")
    key = await hooks.api_key(alice, scopes=["webhooks:manage"])
    async with httpx.AsyncClient(base_url=hooks.server.url) as http:
        made = await http.post("/api/webhooks", json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]},
                               headers={"x-api-key": key})
        assert made.status_code == 201
        listed = await http.get("/api/webhooks", headers={"authorization": f"Bearer {key}"})
    assert [item["webhook_id"] for item in listed.json()["items"]] == [made.json()["webhook"]["webhook_id"]]


# -- several nodes ------------------------------------------------------------------------------------------


async def test_two_nodes_deliver_each_event_once(tmp_path: Any, anyio_backend: str) -> None:
    """Both nodes fan out the same agent's events (each told by its own commits, and by the store): the
    endpoint's cursor moves only from where a node read it, so every event is delivered once."""
    if (reason := postgres_available() or redis_unavailable()) is not None:
        pytest.skip(f"several-node tests skipped: {reason}")
    nodes = start_nodes(anyio_backend, tmp_path, 2, redis_url=os.environ["PARLEY_TEST_REDIS_URL"],
                        redis_channel=f"parley-test-{uuid.uuid4().hex[:12]}", job_poll_seconds="0.1",
                        outbound_allow="127.0.0.1")
    try:
        async with HubClient(nodes[0]) as first, HubClient(nodes[1]) as second:
            alice, bob = await first.register("alice"), await first.register("bob")
            with Receiver(200) as receiver:
                created = await create(second, alice, receiver.url, ["message.created"])
                conversation = await direct(first, bob, alice)
                for n in range(20):
                    await send((first, second)[n % 2], bob, conversation, f"n{n}")
                await receiver.wait_for(20)
                await anyio.sleep(1.0)  # time for a twin to arrive, were there one
                requests = list(receiver.requests)
    finally:
        codes = [node.stop() for node in nodes]
        drop_postgres_database(nodes[0].database_url)
    assert codes == [0, 0]
    bodies = sorted(verified(created["secret"], request)["data"]["message"]["body"] for request in requests)
    assert bodies == sorted(f"n{n}" for n in range(20))
    assert len({request.headers["webhook-id"] for request in requests}) == 20
