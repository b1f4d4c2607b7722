"""Messages: sending, idempotency, listing, editing, deleting (erased from storage), read markers."""

import secrets
import sqlite3
import uuid
from typing import Any

import anyio
import psycopg

from .client import Agent, HubClient
from .conftest import ServerFactory, sqlite_only
from .messaging import all_events, direct, group, metric_values, raises_code, send, timeline
from .servers import HubServer

KIB = 1024


async def _conversation(hub: HubClient, agent: Agent, conversation_id: str) -> dict[str, Any]:
    return await hub.call("conversations.get", {"conversation_id": conversation_id}, token=agent.access_token)


# -- sending and listing --------------------------------------------------------------------------


async def test_messages_get_gapless_increasing_seqs_and_list_in_order(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    sent = [await send(hub, (alice, bob)[i % 2], conversation_id, f"m{i}") for i in range(7)]
    assert [m["seq"] for m in sent] == list(range(2, 9))  # seq 1 is the group's `created` notice
    listed = await timeline(hub, bob, conversation_id, page=3)
    assert [m["seq"] for m in listed] == list(range(1, 9))
    assert [m["body"] for m in listed[1:]] == [f"m{i}" for i in range(7)]
    assert listed[1]["sender_id"] == alice.agent_id and listed[2]["sender_id"] == bob.agent_id
    assert listed[1]["content_type"] == "text" and listed[1]["revision"] == 0 and listed[1]["edited_at"] is None


async def test_messages_list_pages_by_seq_before_and_after(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    for i in range(6):
        await send(hub, alice, conversation_id, f"m{i}")  # seqs 2..7

    async def page(**params: Any) -> tuple[list[int], bool]:
        result = await hub.call("messages.list", {"conversation_id": conversation_id, **params}, token=bob.access_token)
        return [m["seq"] for m in result["items"]], result["has_more"]

    assert await page(limit=3) == ([5, 6, 7], True)
    assert await page(before=5, limit=3) == ([2, 3, 4], True)
    assert await page(before=3, limit=3) == ([1, 2], False)
    assert await page(after=2, limit=3) == ([3, 4, 5], True)
    assert await page(after=5, limit=3) == ([6, 7], False)
    assert await page(after=2, before=6) == ([3, 4, 5], False)
    assert await page(after=7) == ([], False)
    largest = 2**31 - 1  # the largest seq there can be: nothing is after it (PostgreSQL had no room for +1)
    assert await page(after=largest) == ([], False)
    assert await page(after=largest, before=158091715) == ([], False)
    assert await page(before=largest, limit=1) == ([7], True)
    for bad in [{"after": -1}, {"before": "x"}, {"limit": 0}, {"limit": 201}]:
        with raises_code("invalid_request"):
            await hub.call("messages.list", {"conversation_id": conversation_id, **bad}, token=bob.access_token)


async def test_send_to_an_agent_uses_your_direct_conversation(hub: HubClient, alice: Agent, bob: Agent) -> None:
    first = await hub.call("messages.send", {"to": bob.handle, "body": "hi bob"}, token=alice.access_token)
    again = await hub.call("messages.send", {"to": alice.agent_id, "body": "hi alice"}, token=bob.access_token)
    assert first["conversation_id"] == again["conversation_id"] == await direct(hub, alice, bob)
    assert [first["seq"], again["seq"]] == [2, 3]
    with raises_code("invalid_request"):
        await hub.call("messages.send", {"to": alice.handle, "body": "me"}, token=alice.access_token)
    with raises_code("not_found"):
        await hub.call("messages.send", {"to": "nobody-here-at-all", "body": "x"}, token=alice.access_token)


async def test_sending_again_with_a_client_msg_id_returns_the_first_message(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    first = await send(hub, alice, conversation_id, "original", client_msg_id="retry-1", metadata={"n": 1})
    again = await send(hub, alice, conversation_id, "original", client_msg_id="retry-1", metadata={"n": 1})
    assert again == first
    # The same key for something else is a mistake the client must hear about, not a silent first answer.
    for other in ({"body": "a different body"}, {"content_type": "markdown"}, {"metadata": {"n": 2}},
                  {"reply_to": first["message_id"]}):
        asked = {"conversation_id": conversation_id, "body": "original", "metadata": {"n": 1},
                 "client_msg_id": "retry-1", **other}
        with raises_code("conflict") as caught:
            await hub.call("messages.send", asked, token=alice.access_token)
        assert caught.value.details == {"field": "client_msg_id", "message_id": first["message_id"]}
    await hub.call("messages.delete", {"message_id": first["message_id"]}, token=alice.access_token)
    # Deleting erases the body and its fingerprint with it: the key then answers with the tombstone.
    tombstone = await send(hub, alice, conversation_id, "anything", client_msg_id="retry-1")
    assert tombstone["message_id"] == first["message_id"] and tombstone["body"] is None
    assert first["client_msg_id"] == "retry-1" and first["metadata"] == {"n": 1}
    other_sender = await send(hub, bob, conversation_id, "bob's own", client_msg_id="retry-1")
    other_conversation = await hub.call(
        "messages.send", {"to": bob.handle, "body": "direct", "client_msg_id": "retry-1"}, token=alice.access_token
    )
    assert len({first["message_id"], other_sender["message_id"], other_conversation["message_id"]}) == 3
    assert [m["body"] for m in await timeline(hub, bob, conversation_id)][1:] == [None, "bob's own"]
    created = [e for e in await all_events(hub, bob) if e["type"] == "message.created"
               and e["message"]["message_id"] == first["message_id"]]
    assert len(created) == 1


async def test_concurrent_retries_of_one_send_make_one_message(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    results: list[dict[str, Any]] = []

    async def retry(i: int) -> None:
        results.append(await send(hub, alice, conversation_id, "one message", client_msg_id="same"))

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(retry, i)
    assert len({r["message_id"] for r in results}) == 1
    assert len(await timeline(hub, bob, conversation_id)) == 2


async def test_bad_messages_are_refused_and_change_nothing(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    other = await group(hub, alice, bob)
    foreign = await send(hub, alice, other, "elsewhere")
    refused = [
        ({"body": ""}, "invalid_request"),
        ({"body": "  \n\t "}, "invalid_request"),
        ({"body": "x" * (32 * KIB + 1)}, "payload_too_large"),
        ({"body": "é" * (16 * KIB + 1)}, "payload_too_large"),  # counted in UTF-8 bytes
        ({"body": "{not json", "content_type": "json"}, "invalid_request"),
        ({"body": "x", "content_type": "html"}, "invalid_request"),
        ({"body": "x", "to": bob.handle}, "invalid_request"),
        ({"body": "x", "client_msg_id": "c" * 65}, "invalid_request"),
        ({"body": "x", "client_msg_id": "has space"}, "invalid_request"),
        ({"body": "x", "reply_to": foreign["message_id"]}, "invalid_request"),
        ({"body": "x", "reply_to": "msg_unknown"}, "invalid_request"),
        ({"body": "x", "metadata": {"k": "v" * 5000}}, "invalid_request"),
        ({"body": "x", "unknown": 1}, "invalid_request"),
    ]
    for params, code in refused:
        with raises_code(code):
            await send(hub, alice, conversation_id, **{"body": "placeholder", **params})
    with raises_code("invalid_request"):
        await hub.call("messages.send", {"body": "nowhere"}, token=alice.access_token)
    assert len(await timeline(hub, bob, conversation_id)) == 1
    largest = await send(hub, alice, conversation_id, "x" * (32 * KIB))
    reply = await send(hub, bob, conversation_id, '{"ok": [1, 2]}', content_type="json", reply_to=largest["message_id"])
    assert reply["reply_to"] == largest["message_id"] and reply["content_type"] == "json"


async def test_the_body_limit_follows_the_hubs_setting(start_hub: ServerFactory) -> None:
    async with HubClient(start_hub(max_message_bytes="100")) as hub:
        alice, bob = await hub.register("alice"), await hub.register("bob")
        conversation_id = await group(hub, alice, bob)
        await send(hub, alice, conversation_id, "x" * 100)
        with raises_code("payload_too_large") as caught:
            await send(hub, alice, conversation_id, "x" * 101)
        assert caught.value.details["max_bytes"] == 100


async def test_messages_get_returns_one_visible_message(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await direct(hub, alice, bob)
    sent = await send(hub, alice, conversation_id, "fetch me", metadata={"tag": "x"})
    assert await hub.call("messages.get", {"message_id": sent["message_id"]}, token=bob.access_token) == sent
    with raises_code("not_found"):
        await hub.call("messages.get", {"message_id": "msg_01hzzzzzzzzzzzzzzzzzzzzzzz"}, token=bob.access_token)


# -- editing --------------------------------------------------------------------------------------


async def test_only_the_sender_edits_and_an_edit_keeps_seq_with_a_revision(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    sent = await send(hub, alice, conversation_id, "draft", metadata={"v": 1})
    with raises_code("forbidden"):  # an owner may delete others' messages, never rewrite them
        await hub.call("messages.edit", {"message_id": sent["message_id"], "body": "bob's words"},
                       token=bob.access_token)
    system = (await timeline(hub, alice, conversation_id))[0]
    with raises_code("forbidden"):
        await hub.call("messages.edit", {"message_id": system["message_id"], "body": "x"}, token=alice.access_token)
    edited = await hub.call("messages.edit", {"message_id": sent["message_id"], "body": "final"},
                            token=alice.access_token)
    twice = await hub.call("messages.edit", {"message_id": sent["message_id"], "body": "# final", "content_type":
                                             "markdown", "metadata": {"v": 2}}, token=alice.access_token)
    assert (edited["seq"], edited["body"], edited["revision"]) == (sent["seq"], "final", 1)
    assert edited["metadata"] == {"v": 1}
    assert (twice["body"], twice["revision"], twice["content_type"], twice["metadata"]) == ("# final", 2, "markdown",
                                                                                          {"v": 2})
    assert twice["edited_at"] is not None and twice["created_at"] == sent["created_at"]
    assert (await timeline(hub, bob, conversation_id))[-1] == twice
    edits = [e for e in await all_events(hub, bob) if e["type"] == "message.edited"]
    assert [(e["message"]["body"], e["message"]["revision"]) for e in edits] == [("final", 1), ("# final", 2)]


async def test_an_edit_is_checked_like_a_send(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    sent = await send(hub, alice, conversation_id, '{"a": 1}', content_type="json")
    for params, code in [({"body": "not json"}, "invalid_request"), ({"body": ""}, "invalid_request"),
                         ({"body": "x" * (32 * KIB + 1)}, "payload_too_large")]:
        with raises_code(code):
            await hub.call("messages.edit", {"message_id": sent["message_id"], **params}, token=alice.access_token)
    assert (await hub.call("messages.get", {"message_id": sent["message_id"]}, token=alice.access_token)) == sent


# -- deleting -------------------------------------------------------------------------------------


async def test_delete_permissions_sender_or_group_owner_and_admin(hub: HubClient, alice: Agent, bob: Agent) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob, carol)
    by_bob = await send(hub, bob, conversation_id, "bob's")
    by_carol = await send(hub, carol, conversation_id, "carol's")
    with raises_code("forbidden"):
        await hub.call("messages.delete", {"message_id": by_bob["message_id"]}, token=carol.access_token)
    await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": carol.agent_id,
                                              "role": "admin"}, token=alice.access_token)
    by_admin = await hub.call("messages.delete", {"message_id": by_bob["message_id"]}, token=carol.access_token)
    by_owner = await hub.call("messages.delete", {"message_id": by_carol["message_id"]}, token=alice.access_token)
    assert by_admin["body"] is None and by_owner["body"] is None
    in_direct = await hub.call("messages.send", {"to": bob.handle, "body": "private"}, token=alice.access_token)
    with raises_code("forbidden"):  # no moderators in a direct conversation
        await hub.call("messages.delete", {"message_id": in_direct["message_id"]}, token=bob.access_token)
    await hub.call("messages.delete", {"message_id": in_direct["message_id"]}, token=alice.access_token)


async def test_delete_leaves_a_tombstone_that_keeps_its_seq_everywhere(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    await send(hub, alice, conversation_id, "before")
    doomed = await send(hub, alice, conversation_id, "doomed words", metadata={"secret": "meta"})
    await send(hub, alice, conversation_id, "after")
    tombstone = await hub.call("messages.delete", {"message_id": doomed["message_id"]}, token=alice.access_token)
    assert tombstone["seq"] == doomed["seq"] and tombstone["body"] is None and tombstone["metadata"] == {}
    assert tombstone["deleted_at"] is not None
    again = await hub.call("messages.delete", {"message_id": doomed["message_id"]}, token=alice.access_token)
    assert again == tombstone
    listed = await timeline(hub, bob, conversation_id)
    assert [m["seq"] for m in listed] == [1, 2, 3, 4] and listed[2] == tombstone
    with raises_code("conflict"):
        await hub.call("messages.edit", {"message_id": doomed["message_id"], "body": "revived"},
                       token=alice.access_token)
    events = [e for e in await all_events(hub, bob)
              if e["message"] and e["message"]["message_id"] == doomed["message_id"]]
    assert [e["type"] for e in events] == ["message.created", "message.deleted"]
    assert all(e["message"]["body"] is None and e["message"]["metadata"] == {} for e in events)
    assert (await hub.call("conversations.get", {"conversation_id": conversation_id},
                           token=bob.access_token))["unread_count"] == 2


async def test_a_page_read_again_shows_every_change_since_and_only_what_the_reader_may_see(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    """The hub keeps the messages it has shown, by row version (`hub.services.message_views`), and shares
    them between readers: an edit or a delete shows on the next read of a page that showed the message,
    and a message one reader was shown is not shown to a reader who blocks its sender. (The changed
    messages lie apart, so they are read again by id; the first read is of a run of seqs.)"""
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob, carol)
    edited = await send(hub, alice, conversation_id, "first draft", metadata={"v": 1})
    between = [(await send(hub, bob, conversation_id, f"between {n}"))["message_id"] for n in range(4)]
    doomed = await send(hub, alice, conversation_id, "regrettable")
    kept = await send(hub, bob, conversation_id, "unchanged")

    async def page(agent: Agent) -> dict[str, dict[str, Any]]:
        return {m["message_id"]: m for m in await timeline(hub, agent, conversation_id) if m["kind"] == "message"}

    before = await page(bob)
    assert before == await page(bob)
    assert list(before) == [edited["message_id"], *between, doomed["message_id"], kept["message_id"]]
    await hub.call("messages.edit", {"message_id": edited["message_id"], "body": "final", "metadata": {"v": 2}},
                   token=alice.access_token)
    await hub.call("messages.delete", {"message_id": doomed["message_id"]}, token=alice.access_token)
    after = await page(bob)
    assert (after[edited["message_id"]]["body"], after[edited["message_id"]]["metadata"],
            after[edited["message_id"]]["revision"]) == ("final", {"v": 2}, 1)
    assert after[doomed["message_id"]]["body"] is None and after[doomed["message_id"]]["deleted_at"] is not None
    assert after[kept["message_id"]] == before[kept["message_id"]]
    for message_id, message in after.items():  # a page shows each message as messages.get does
        assert message == await hub.call("messages.get", {"message_id": message_id}, token=bob.access_token)
    await hub.call("blocks.add", {"agent": alice.agent_id}, token=carol.access_token)
    assert list(await page(carol)) == [*between, kept["message_id"]]
    assert list(await page(bob)) == list(after)


async def test_metrics_count_the_stores_writes_and_the_writers_time(hub: HubClient, alice: Agent, bob: Agent) -> None:
    """/metrics has the writer's figures (`bench.send` reports them): writes, batches, its time."""
    conversation_id = await group(hub, alice, bob)
    before = await metric_values(hub.http)
    for n in range(3):
        await send(hub, alice, conversation_id, f"counted {n}")
    after = await metric_values(hub.http)
    assert after["parley_store_writes_total"] - before["parley_store_writes_total"] >= 3
    assert after["parley_store_commits_total"] > before["parley_store_commits_total"]
    assert after["parley_store_writer_seconds_total"] > before["parley_store_writer_seconds_total"]
    assert after["parley_store_writer_cpu_seconds_total"] > before["parley_store_writer_cpu_seconds_total"]


async def test_metrics_count_the_views_of_messages_served_and_built(hub: HubClient, alice: Agent, bob: Agent) -> None:
    """/metrics tells an operator how well `PARLEY_MESSAGE_CACHE_BYTES` serves: views served, views built."""
    conversation_id = await group(hub, alice, bob)
    for n in range(3):
        await send(hub, alice, conversation_id, f"counted {n}")
    before = await metric_values(hub.http)
    await timeline(hub, bob, conversation_id)  # 4 messages with the group's creation: built
    built = await metric_values(hub.http)
    await timeline(hub, bob, conversation_id)  # served
    served = await metric_values(hub.http)
    assert built["parley_message_views_misses_total"] - before["parley_message_views_misses_total"] == 4
    assert built["parley_message_views_bytes"] > before["parley_message_views_bytes"]
    assert served["parley_message_views_hits_total"] - built["parley_message_views_hits_total"] == 4
    assert served["parley_message_views_misses_total"] == built["parley_message_views_misses_total"]


async def _stored_bytes(server: HubServer) -> bytes:
    """Everything the SQLite store holds on disk: the database file and its WAL."""
    assert server.sqlite_path is not None
    data = b""
    for path in (server.sqlite_path, server.sqlite_path.with_name(server.sqlite_path.name + "-wal")):
        if await anyio.Path(path).exists():
            data += await anyio.Path(path).read_bytes()
    return data


def _postgres_rows(server: HubServer, needle: str) -> list[tuple[str, str]]:
    """Rows of the messages and events tables whose text contains `needle`."""
    url = server.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return [
            *conn.execute("SELECT 'messages', id FROM messages WHERE body LIKE %s OR metadata::text LIKE %s",
                          (f"%{needle}%", f"%{needle}%")).fetchall(),
            *conn.execute("SELECT 'events', id::text FROM events WHERE payload::text LIKE %s",
                          (f"%{needle}%",)).fetchall(),
        ]


async def test_a_deleted_body_is_erased_from_the_database(hub: HubClient, alice: Agent, bob: Agent) -> None:
    server = hub.server
    conversation_id = await group(hub, alice, bob)
    body = f"erase-me-{uuid.uuid4().hex}"
    meta = f"meta-{uuid.uuid4().hex}"
    sent = await send(hub, alice, conversation_id, body, metadata={"k": meta})
    edited_body = f"edited-{uuid.uuid4().hex}"
    await hub.call("messages.edit", {"message_id": sent["message_id"], "body": edited_body}, token=alice.access_token)
    if server.store == "sqlite":
        stored = await _stored_bytes(server)
        assert body.encode() in stored and edited_body.encode() in stored  # the search can see it
    else:
        assert await anyio.to_thread.run_sync(_postgres_rows, server, edited_body)
    await hub.call("messages.delete", {"message_id": sent["message_id"]}, token=alice.access_token)
    if server.store == "sqlite":
        stored = await _stored_bytes(server)
        for needle in (body, edited_body, meta):
            assert needle.encode() not in stored, needle
    else:
        for needle in (body, edited_body, meta):
            assert await anyio.to_thread.run_sync(_postgres_rows, server, needle) == []



async def _erased_on_disk(server: HubServer, needles: list[str]) -> None:
    """Wait until none of `needles` is in the SQLite files (the hub finishes a held-up erasure by itself)."""
    with anyio.fail_after(10):
        while True:
            stored = await _stored_bytes(server)
            if not any(needle.encode() in stored for needle in needles):
                return
            await anyio.sleep(0.1)


@sqlite_only
async def test_an_erasure_held_up_by_a_reader_is_answered_at_once_and_completes_when_it_lets_go(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    """Issue 17, defect 2: another connection reading the file (a backup, `parley mcp` on the same store)
    keeps the WAL's old page images; the delete must neither wait for it nor leave the bytes behind."""
    server = hub.server
    assert server.sqlite_path is not None
    conversation_id = await group(hub, alice, bob)
    body = f"held-{uuid.uuid4().hex}"
    sent = await send(hub, alice, conversation_id, body)
    reader = sqlite3.connect(server.sqlite_path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchall()  # holds this snapshot until it ends
        with anyio.fail_after(5):  # the hub's busy timeout is 10 s: waiting for the reader would fail here
            await hub.call("messages.delete", {"message_id": sent["message_id"]}, token=alice.access_token)
        assert body.encode() in await _stored_bytes(server), "the reader did not hold the WAL: nothing was tested"
    finally:
        reader.close()
    await _erased_on_disk(server, [body])


@sqlite_only
async def test_a_large_body_in_overflow_pages_is_erased_from_the_files(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    body = secrets.token_hex(15 * 1024)  # 30 KiB: spread over several overflow pages of 4 KiB
    pieces = [body[at:at + 48] for at in range(0, len(body), 4096)]
    sent = await send(hub, alice, conversation_id, body)
    stored = await _stored_bytes(hub.server)
    assert all(piece.encode() in stored for piece in pieces)
    await hub.call("messages.delete", {"message_id": sent["message_id"]}, token=alice.access_token)
    await _erased_on_disk(hub.server, pieces)

# -- read markers ---------------------------------------------------------------------------------


async def test_read_markers_move_forward_only_and_drive_unread_counts(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    sent = [await send(hub, alice, conversation_id, f"m{i}") for i in range(4)]  # seqs 2..5
    assert (await _conversation(hub, bob, conversation_id))["unread_count"] == 4
    state = await hub.call("messages.mark_read", {"conversation_id": conversation_id, "seq": sent[1]["seq"]},
                           token=bob.access_token)
    assert state == {"conversation_id": conversation_id, "last_read_seq": 3, "unread_count": 2}
    back = await hub.call("messages.mark_read", {"conversation_id": conversation_id, "seq": 1}, token=bob.access_token)
    assert back["last_read_seq"] == 3 and back["unread_count"] == 2
    for seq in (6, -1):
        with raises_code("invalid_request"):
            await hub.call("messages.mark_read", {"conversation_id": conversation_id, "seq": seq},
                           token=bob.access_token)
    await hub.call("messages.delete", {"message_id": sent[3]["message_id"]}, token=alice.access_token)
    assert (await _conversation(hub, bob, conversation_id))["unread_count"] == 1  # deleted ones do not count
    done = await hub.call("messages.mark_read", {"conversation_id": conversation_id, "seq": 5}, token=bob.access_token)
    assert done["unread_count"] == 0
    view = await _conversation(hub, alice, conversation_id)
    assert {m["agent_id"]: m["last_read_seq"] for m in view["members"]}[bob.agent_id] == 5
    reads = [e for e in await all_events(hub, alice) if e["type"] == "read.updated"]
    assert [(e["read"]["agent_id"], e["read"]["last_read_seq"]) for e in reads] == [(bob.agent_id, 3),
                                                                                     (bob.agent_id, 5)]
