"""Files against real hubs: multipart uploads, sniffed types, downloads with ranges and ETags, bytes stored
once, attachments readable by who sees the message and nobody else, limits, quota, expiry, erasure."""

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from protocol.errors import NotFound, QuotaExceeded

from .client import Agent, HubClient
from .conftest import diagonal
from .inprocess import ManualClock, local_hub
from .messaging import WAIT, all_events, group, raises_code, send, timeline
from .samples import pdf
from .servers import HubServer, drop_postgres_database, make_server
from .stored import stored
from .test_documents import upload

pytestmark = pytest.mark.anyio


def bearer(agent: Agent) -> dict[str, str]:
    return {"authorization": f"Bearer {agent.access_token}"}


async def test_an_upload_is_sniffed_hashed_and_downloaded_whole_or_by_range(hub: HubClient, alice: Agent) -> None:
    data = pdf(["A PDF pretending to be text."])
    file = await upload(hub, alice, "notes.txt", data)  # the name says text; the bytes say PDF
    assert (file["name"], file["size"], file["media_type"]) == ("notes.txt", len(data), "application/pdf")
    assert file["sha256"] == hashlib.sha256(data).hexdigest() and file["owner_id"] == alice.agent_id
    url = f"/api/files/{file['file_id']}/content"
    whole = await hub.http.get(url, headers=bearer(alice))
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "application/pdf"
    assert whole.headers["etag"] == f'"{file["sha256"]}"'
    assert whole.headers["content-disposition"] == "attachment; filename*=UTF-8''notes.txt"
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["x-content-type-options"] == "nosniff"
    cached = await hub.http.get(url, headers={**bearer(alice), "if-none-match": whole.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""
    part = await hub.http.get(url, headers={**bearer(alice), "range": "bytes=5-14"})
    assert part.status_code == 206 and part.content == data[5:15]
    assert part.headers["content-range"] == f"bytes 5-14/{len(data)}"
    tail = await hub.http.get(url, headers={**bearer(alice), "range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == data[-7:]
    beyond = await hub.http.get(url, headers={**bearer(alice), "range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert (await hub.call("files.get", {"file_id": file["file_id"]}, token=alice.access_token)) == file


async def test_a_large_upload_spans_many_chunks_and_reads_back_exactly(hub: HubClient, alice: Agent) -> None:
    data = os.urandom(3 * 256 * 1024 + 12345)
    file = await upload(hub, alice, "blob.bin", data)
    assert file["media_type"] == "application/octet-stream"
    url = f"/api/files/{file['file_id']}/content"
    assert (await hub.http.get(url, headers=bearer(alice))).content == data
    across = await hub.http.get(url, headers={**bearer(alice), "range": "bytes=262000-524400"})
    assert across.content == data[262000:524401]


async def test_the_same_bytes_are_stored_once_and_go_with_the_last_file(hub: HubClient, alice: Agent,
                                                                        bob: Agent) -> None:
    marker = f"shared-bytes-{os.urandom(8).hex()}"
    data = marker.encode() * 100
    first = await upload(hub, alice, "a.txt", data)
    second = await upload(hub, bob, "b.txt", data)
    assert first["sha256"] == second["sha256"] and first["file_id"] != second["file_id"]
    await hub.call("files.delete", {"file_id": first["file_id"]}, token=alice.access_token)
    kept = await hub.http.get(f"/api/files/{second['file_id']}/content", headers=bearer(bob))
    assert kept.content == data  # bob's file still has the bytes alice's shared
    assert await stored(hub.server, marker)
    await hub.call("files.delete", {"file_id": second["file_id"]}, token=bob.access_token)
    with anyio.fail_after(WAIT):
        while await stored(hub.server, marker):
            await anyio.sleep(0.1)


async def test_an_attachment_is_read_by_who_sees_the_message_and_nobody_else(hub: HubClient, alice: Agent,
                                                                          bob: Agent) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob)
    file = await upload(hub, alice, "plan.txt", b"the plan")
    sent = await send(hub, alice, conversation_id, "see attached", attachments=[file["file_id"]])
    assert sent["attachments"] == [{"file_id": file["file_id"], "name": "plan.txt", "size": 8,
                                    "media_type": "text/plain"}]
    listed = await hub.call("messages.get", {"message_id": sent["message_id"]}, token=bob.access_token)
    assert listed["attachments"][0]["file_id"] == file["file_id"]
    url = f"/api/files/{file['file_id']}/content"
    assert (await hub.http.get(url, headers=bearer(bob))).content == b"the plan"
    outsider = await hub.http.get(url, headers=bearer(carol))
    assert outsider.status_code == 404 and outsider.json()["error"]["code"] == "not_found"
    with raises_code("not_found"):
        await hub.call("files.get", {"file_id": file["file_id"]}, token=carol.access_token)
    with raises_code("not_found"):  # carol cannot attach what she cannot read
        await hub.call("messages.send", {"to": bob.handle, "body": "x", "attachments": [file["file_id"]]},
                       token=carol.access_token)
    with raises_code("not_found"):  # the owner alone deletes it
        await hub.call("files.delete", {"file_id": file["file_id"]}, token=bob.access_token)
    await hub.call("messages.delete", {"message_id": sent["message_id"]}, token=alice.access_token)
    assert (await hub.http.get(url, headers=bearer(bob))).status_code == 404  # gone with the message
    assert (await hub.http.get(url, headers=bearer(alice))).content == b"the plan"  # still alice's


async def test_deleting_a_file_takes_it_out_of_the_messages_and_events_that_carried_it(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    name = f"merger-{os.urandom(6).hex()}.txt"
    keep, gone = await upload(hub, alice, "keep.txt", b"kept"), await upload(hub, alice, name, b"going")
    sent = await send(hub, alice, conversation_id, "two files", attachments=[keep["file_id"], gone["file_id"]])
    assert await stored(hub.server, name)  # a control: the test looks where the hub writes
    assert len((await timeline(hub, bob, conversation_id))[-1]["attachments"]) == 2  # the hub keeps this page
    await hub.call("files.delete", {"file_id": gone["file_id"]}, token=alice.access_token)
    message = await hub.call("messages.get", {"message_id": sent["message_id"]}, token=bob.access_token)
    assert [attachment["file_id"] for attachment in message["attachments"]] == [keep["file_id"]]
    assert (await timeline(hub, bob, conversation_id))[-1] == message
    events = [e for e in await all_events(hub, bob)
              if e["message"] and e["message"]["message_id"] == sent["message_id"]]
    assert events and all([a["name"] for a in e["message"]["attachments"]] == ["keep.txt"] for e in events)
    with anyio.fail_after(WAIT):
        while await stored(hub.server, name):
            await anyio.sleep(0.1)


async def test_too_many_attachments_is_refused(hub: HubClient, alice: Agent, bob: Agent) -> None:
    file = await upload(hub, alice, "x.txt", b"x")
    with raises_code("invalid_request"):
        await hub.call("messages.send", {"to": bob.handle, "body": "many", "attachments": [file["file_id"]] * 11},
                       token=alice.access_token)


@pytest.fixture(scope="module")
def strict_files(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str, store_kind: str) -> Iterator[HubServer]:
    """A hub with 64 KiB files, 160 KiB of storage an agent, and three uploads in a burst."""
    server = make_server(anyio_backend, store_kind, tmp_path_factory.mktemp(f"strict-files-{anyio_backend}"),
                         max_file_bytes=str(64 * 1024), storage_quota_bytes=str(160 * 1024), rate_upload="3:0.01")
    server.launch()
    yield server
    assert server.stop() == 0, server.log()
    if server.database_url:
        drop_postgres_database(server.database_url)


async def test_a_body_that_is_not_the_multipart_it_says_is_a_json_400_and_stores_nothing(
    hub: HubClient, alice: Agent
) -> None:
    """Starlette answers a multipart body it cannot parse with its own text/plain 400; the hub's error is
    JSON with a code, as for every other refused request (schemathesis found a body with no part headers)."""
    boundary = "7c5156fb04a2177cf9e322ad31ebde44"
    broken = f"--{boundary}\r\nNone--{boundary}--\r\n".encode()
    two_files = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
                         f"{name}\r\n".encode() for name in ("a.txt", "b.txt")) + f"--{boundary}--\r\n".encode()
    for body in (broken, two_files):
        answer = await hub.http.post("/api/files", content=body, headers={
            **bearer(alice), "content-type": f"multipart/form-data; boundary={boundary}"})
        assert answer.status_code == 400 and answer.headers["content-type"] == "application/json", answer.text
        assert answer.json()["error"]["code"] == "invalid_request"
        assert answer.json()["error"]["details"] == {"field": "file"}
    assert (await hub.call("files.list", {}, token=alice.access_token))["items"] == []


@diagonal
async def test_file_size_quota_and_upload_rate_are_limits_with_clear_errors(strict_files: HubServer) -> None:
    async with HubClient(strict_files) as hub:
        agent = await hub.register("limited")
        too_big = await hub.post_file("big.bin", os.urandom(200 * 1024), agent.access_token)
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
        for index in range(2):
            await upload(hub, agent, f"{index}.bin", os.urandom(60 * 1024))
        over = await hub.post_file("2.bin", os.urandom(60 * 1024), agent.access_token)
        assert over.status_code == 403, over.text
        assert over.json()["error"]["code"] == "quota_exceeded"
        assert over.json()["error"]["details"] == {"quota": "storage_bytes", "limit": 160 * 1024,
                                                  "used": 120 * 1024, "resets_at": None}
        limited = await hub.post_file("3.bin", b"x", agent.access_token)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        files = await hub.call("files.list", {}, token=agent.access_token)
        assert len(files["items"]) == 2  # nothing refused was kept


async def test_an_expiring_file_is_erased_when_it_expires(tmp_path: Path, store_kind: str) -> None:
    clock = ManualClock()
    async with local_hub(tmp_path, store_kind, clock, embeddings="off") as local:
        agent = await local.agent("brief")
        key, _ = await local.api_key(agent)  # an access token would expire with the clock moved an hour
        data = base64.b64encode(b"short-lived").decode()
        file = await local.call(key, "files.upload", {"name": "brief.txt", "content_base64": data,
                                                      "expires_in_seconds": 3600})
        clock.advance(3601)
        with pytest.raises(NotFound):
            await local.call(key, "files.get", {"file_id": file["file_id"]})
        local.hub.jobs.notify("files.expire")
        with anyio.fail_after(WAIT):
            while (await local.call(key, "files.list", {}))["items"]:
                await anyio.sleep(0.05)


async def test_the_storage_quota_counts_files_and_text_documents_together(tmp_path: Path, store_kind: str) -> None:
    async with local_hub(tmp_path, store_kind, storage_quota_bytes=100, embeddings="off") as local:
        agent = await local.agent("quota")
        await local.as_agent(agent, "files.upload", {"name": "a.txt",
                                                     "content_base64": base64.b64encode(b"a" * 60).decode()})
        with pytest.raises(QuotaExceeded):
            await local.as_agent(agent, "documents.add", {"title": "t", "text": "b" * 60})
        assert (await local.as_agent(agent, "documents.store", {}))["bytes_used"] == 60



async def test_a_document_made_from_a_file_never_counts_the_files_bytes_twice(tmp_path: Path, store_kind: str) -> None:
    async with local_hub(tmp_path, store_kind, embeddings="off") as local:
        agent = await local.agent("counts")
        file = await local.as_agent(agent, "files.upload",
                                    {"name": "a.txt", "content_base64": base64.b64encode(b"a b c " * 10).decode()})
        document = await local.as_agent(agent, "documents.add", {"file_id": file["file_id"]})
        await local.as_agent(agent, "documents.add", {"title": "t", "text": "words " * 5})
        assert (await local.as_agent(agent, "documents.store", {}))["bytes_used"] == 60 + 30
        await local.as_agent(agent, "files.delete", {"file_id": file["file_id"]})
        await local.as_agent(agent, "documents.delete", {"document_id": document["document_id"]})
        assert (await local.as_agent(agent, "documents.store", {}))["bytes_used"] == 30
