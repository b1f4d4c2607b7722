"""The document store against real hubs: ingestion of every format with live progress, search with
citations, unreadable files failing alone, management by role, restart safety and erasure."""

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from hub.services.documents import status_of

from .client import Agent, HubClient, RpcSocket
from .conftest import ServerFactory, diagonal
from .messaging import WAIT, all_events, direct, group, raises_code
from .samples import broken_xml_docx, docx, encrypted_pdf, html, pdf, zip_bomb_docx
from .stored import stored

pytestmark = pytest.mark.anyio


async def upload(hub: HubClient, agent: Agent, name: str, data: bytes) -> dict[str, Any]:
    """A file uploaded over REST, multipart, as a client would."""
    response = await hub.post_file(name, data, agent.access_token)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def settled(hub: HubClient, agent: Agent, document_id: str) -> dict[str, Any]:
    """The document once ingestion is over (ready or failed)."""
    with anyio.fail_after(WAIT):
        while (document := await hub.call("documents.get", {"document_id": document_id},
                                          token=agent.access_token))["state"] in ("queued", "processing"):
            await anyio.sleep(0.05)
    return document  # type: ignore[no-any-return]


async def add_text(hub: HubClient, agent: Agent, title: str, text: str, **params: Any) -> dict[str, Any]:
    added = await hub.call("documents.add", {"title": title, "text": text, **params}, token=agent.access_token)
    return await settled(hub, agent, added["document_id"])


async def search(hub: HubClient, agent: Agent, query: str, **params: Any) -> list[dict[str, Any]]:
    found = await hub.call("documents.search", {"query": query, "mode": "lexical", **params}, token=agent.access_token)
    return found["items"]  # type: ignore[no-any-return]


async def test_a_text_document_is_cut_into_cited_passages_with_progress_and_an_audit_trail(
    hub: HubClient, alice: Agent
) -> None:
    paragraphs = [f"Paragraph {i} is about {'zebras' if i == 7 else 'filler'} and nothing much else. " * 8
                  for i in range(12)]
    text = "\n\n".join(paragraphs)
    document = await add_text(hub, alice, "Field notes", text)
    assert (document["state"], document["media_type"], document["size"]) == ("ready", "text/plain",
                                                                            len(text.encode()))
    assert document["passages"] >= 3 and document["pages"] is None
    hits = await search(hub, alice, "zebras")
    citation = hits[0]["passages"][0]["citation"]
    assert (citation["document_id"], citation["title"], citation["page"]) == (document["document_id"],
                                                                            "Field notes", None)
    assert text[citation["start"]:citation["end"]] == hits[0]["passages"][0]["text"]
    assert "zebras" in hits[0]["passages"][0]["text"]
    whole = await hub.call("documents.text", {"document_id": document["document_id"]}, token=alice.access_token)
    assert " ".join(whole["text"].split()) == " ".join(text.split()) and whole["truncated"] is False

    status = await hub.call("documents.status", {}, token=alice.access_token)
    assert (status["state"], status["percent"], status["processed"], status["total"]) == ("completed", 100.0, 1, 1)
    progress = [e for e in await all_events(hub, alice) if e["type"] == "documents.progress"]
    assert [e["document"]["state"] for e in progress] == ["queued", "processing", "ready"]
    assert [e["progress"]["state"] for e in progress][-1] == "completed"
    audit = await hub.call("documents.audit", {"document_id": document["document_id"]}, token=alice.access_token)
    assert [entry["action"] for entry in audit["items"]] == ["ingest_completed", "ingest_started"]
    assert audit["items"][0]["details"]["passages"] == document["passages"]


async def test_progress_is_pushed_live_on_the_websocket(hub: HubClient, alice: Agent) -> None:
    async with await RpcSocket.open(hub.server, alice.access_token) as ws:
        await ws.call("events.subscribe", {})
        added = await hub.call("documents.add", {"title": "Live", "text": "Watch me ingest."},
                               token=alice.access_token)
        states: list[str] = []
        with anyio.fail_after(WAIT):
            while "ready" not in states:
                await ws.receive_notification()
                states = [n["params"]["document"]["state"] for n in ws.notifications
                          if n["method"] == "event" and n["params"]["type"] == "documents.progress"]
    assert states == ["queued", "processing", "ready"]
    assert added["document_id"] == ws.notifications[-1]["params"]["document"]["document_id"]


async def test_pdf_docx_and_html_files_are_read_and_cited(hub: HubClient, alice: Agent) -> None:
    uploaded = {
        "report.pdf": await upload(hub, alice, "report.pdf", pdf(["The intro mentions apples.",
                                                                 "Page two: the harvest of quinces was late."])),
        "memo.docx": await upload(hub, alice, "memo.docx", docx(["Memo.", "Budgets for plums are approved."])),
        "page.html": await upload(hub, alice, "page.html", html("Orchard", ["Pears ripen in September."])),
    }
    assert uploaded["report.pdf"]["media_type"] == "application/pdf"
    documents = {}
    for name, file in uploaded.items():
        added = await hub.call("documents.add", {"file_id": file["file_id"]}, token=alice.access_token)
        documents[name] = await settled(hub, alice, added["document_id"])
        assert (documents[name]["state"], documents[name]["title"]) == ("ready", name), documents[name]
    assert documents["report.pdf"]["pages"] == 2
    quinces = (await search(hub, alice, "quinces harvest"))[0]["passages"][0]
    assert (quinces["citation"]["title"], quinces["citation"]["page"]) == ("report.pdf", 2)
    assert "plums" in (await search(hub, alice, "plums budget"))[0]["passages"][0]["text"]
    pears = (await search(hub, alice, "pears"))[0]["passages"][0]["text"]
    assert "Pears ripen" in pears and "secret" not in pears  # the page's text, not its script


async def test_unreadable_files_fail_with_a_reason_and_nothing_else_is_affected(hub: HubClient, alice: Agent) -> None:
    bad = {
        "scan.pdf": (pdf(["", ""]), "no text layer"),
        "locked.pdf": (encrypted_pdf(["secret plans"]), "encrypted"),
        "broken.pdf": (pdf(["truncated"])[:150], "not a readable PDF"),
        "bomb.docx": (zip_bomb_docx(), "zip bomb"),
        "half.docx": (broken_xml_docx(), "could not be read as"),
        "image.png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a format"),
    }
    good = await add_text(hub, alice, "Good one", "Still searchable: kumquats.")
    files = {name: await upload(hub, alice, name, data) for name, (data, _) in bad.items()}
    added = {name: await hub.call("documents.add", {"file_id": file["file_id"]}, token=alice.access_token)
             for name, file in files.items()}  # one round of ingestion, most likely: all of them failing
    for name, (_, reason) in bad.items():
        failed = await settled(hub, alice, added[name]["document_id"])
        assert failed["state"] == "failed" and reason in failed["error"], (name, failed)
        assert failed["passages"] == 0
    assert (await search(hub, alice, "kumquats"))[0]["document_id"] == good["document_id"]
    store = await hub.call("documents.store", {}, token=alice.access_token)
    assert (store["documents"], store["ready"], store["failed"]) == (7, 1, 6)
    status = await hub.call("documents.status", {}, token=alice.access_token)
    assert status["state"] == "failed" and status["failed"] == status["total"] == status["processed"] >= 1
    failures = await hub.call("documents.audit", {}, token=alice.access_token)
    assert sum(entry["action"] == "ingest_failed" for entry in failures["items"]) == 6


@pytest.mark.parametrize(("anyio_backend", "store_kind"), [("trio", "sqlite")], indirect=True, scope="session")
async def test_an_ingestion_the_hub_itself_keeps_failing_ends_failed_and_can_be_tried_again(
    hub: HubClient, alice: Agent
) -> None:
    """Not the file's fault (here the database refuses the passages): retried, then failed with the reason."""
    assert hub.server.sqlite_path is not None

    def database(statement: str) -> None:
        with sqlite3.connect(hub.server.sqlite_path) as conn:
            conn.execute(statement)

    await anyio.to_thread.run_sync(database, "CREATE TRIGGER refuse_passages BEFORE INSERT ON document_chunks "
                                             "WHEN NEW.text LIKE '%quarantined%' BEGIN SELECT RAISE(ABORT, 'disk "
                                             "quarantined'); END")
    try:
        added = await hub.call("documents.add", {"title": "Q", "text": "This text is quarantined."},
                               token=alice.access_token)
        failed = await settled(hub, alice, added["document_id"])
    finally:
        await anyio.to_thread.run_sync(database, "DROP TRIGGER refuse_passages")
    assert failed["state"] == "failed" and "failed 3 times" in failed["error"] and "disk quarantined" in failed["error"]
    status = await hub.call("documents.status", {}, token=alice.access_token)
    assert (status["state"], status["failed"]) == ("failed", 1)
    await hub.call("documents.reingest", {"document_id": added["document_id"]}, token=alice.access_token)
    assert (await settled(hub, alice, added["document_id"]))["state"] == "ready"


async def test_exclude_include_reingest_and_delete(hub: HubClient, alice: Agent) -> None:
    document = await add_text(hub, alice, "Toggle", "Axolotls regrow their limbs.")
    document_id = document["document_id"]
    excluded = await hub.call("documents.exclude", {"document_id": document_id}, token=alice.access_token)
    assert excluded["excluded"] is True
    assert await search(hub, alice, "axolotls") == []
    await hub.call("documents.include", {"document_id": document_id}, token=alice.access_token)
    assert len(await search(hub, alice, "axolotls")) == 1
    await hub.call("documents.reingest", {"document_id": document_id}, token=alice.access_token)
    again = await settled(hub, alice, document_id)
    assert again["passages"] == document["passages"]  # replaced, not duplicated
    assert len(await search(hub, alice, "axolotls", group_by_document=False)) == document["passages"]
    await hub.call("documents.delete", {"document_id": document_id}, token=alice.access_token)
    assert await search(hub, alice, "axolotls") == []
    with raises_code("not_found"):
        await hub.call("documents.get", {"document_id": document_id}, token=alice.access_token)
    actions = [entry["action"] for entry in (await hub.call("documents.audit", {"document_id": document_id},
                                                            token=alice.access_token))["items"]]
    assert actions[:4] == ["deleted", "ingest_completed", "ingest_started", "included"]


async def test_search_groups_by_document_and_narrows_to_documents(hub: HubClient, alice: Agent) -> None:
    long = await add_text(hub, alice, "Long", "\n\n".join(f"Section {i}: gravel roads need grading. " * 30
                                                         for i in range(4)))
    short = await add_text(hub, alice, "Short", "Gravel is cheap.")
    grouped = await search(hub, alice, "gravel", group_by_document=True)
    assert sorted(hit["document_id"] for hit in grouped) == sorted([long["document_id"], short["document_id"]])
    assert 1 < len(next(h for h in grouped if h["document_id"] == long["document_id"])["passages"]) <= 3
    only = await search(hub, alice, "gravel", document_ids=[short["document_id"]])
    assert [hit["document_id"] for hit in only] == [short["document_id"]]


async def test_offset_pages_through_one_ranking(hub: HubClient, alice: Agent) -> None:
    for i in range(7):
        await add_text(hub, alice, f"Note {i}", "turnips " * (i + 1) + "grow in cold soil.")
    whole = await search(hub, alice, "turnips", group_by_document=True, limit=7)
    pages = [await search(hub, alice, "turnips", group_by_document=True, limit=3, offset=offset)
             for offset in (0, 3, 6)]
    assert [hit["document_id"] for page in pages for hit in page] == [hit["document_id"] for hit in whole]
    assert len(whole) == 7 and [len(page) for page in pages] == [3, 3, 1]
    with raises_code("invalid_request"):
        await search(hub, alice, "turnips", offset=151)


async def test_a_conversation_store_is_searched_by_members_and_managed_by_roles(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol, dave = await hub.register("carol"), await hub.register("dave")
    conversation_id = await group(hub, alice, bob, carol)
    by_bob = await add_text(hub, bob, "Runbook", "Restart the flux capacitor weekly.", conversation_id=conversation_id)
    assert by_bob["conversation_id"] == conversation_id
    for member in (alice, carol):
        hits = await search(hub, member, "flux capacitor", conversation_id=conversation_id)
        assert [hit["document_id"] for hit in hits] == [by_bob["document_id"]]
    assert await search(hub, carol, "flux capacitor") == []  # her own store alone
    for call in (hub.call("documents.get", {"document_id": by_bob["document_id"]}, token=dave.access_token),
                 search(hub, dave, "flux", conversation_id=conversation_id),
                 hub.call("documents.status", {"conversation_id": conversation_id}, token=dave.access_token)):
        with raises_code("not_found"):
            await call
    with raises_code("forbidden"):  # a plain member, not who added it
        await hub.call("documents.exclude", {"document_id": by_bob["document_id"]}, token=carol.access_token)
    await hub.call("documents.exclude", {"document_id": by_bob["document_id"]}, token=alice.access_token)  # the owner
    await hub.call("conversations.leave", {"conversation_id": conversation_id}, token=carol.access_token)
    with raises_code("not_found"):
        await hub.call("documents.get", {"document_id": by_bob["document_id"]}, token=carol.access_token)


async def test_in_a_direct_conversation_each_manages_only_what_they_added(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await direct(hub, alice, bob)
    by_alice = await add_text(hub, alice, "Plan", "Ship on Friday.", conversation_id=conversation_id)
    assert [hit["document_id"] for hit in await search(hub, bob, "friday", conversation_id=conversation_id)] == [
        by_alice["document_id"]]
    for method in ("documents.exclude", "documents.reingest", "documents.delete"):
        with raises_code("forbidden"):
            await hub.call(method, {"document_id": by_alice["document_id"]}, token=bob.access_token)
    await hub.call("documents.delete", {"document_id": by_alice["document_id"]}, token=alice.access_token)


async def test_what_a_blocked_agent_added_is_hidden_from_every_read(hub: HubClient, alice: Agent, bob: Agent) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob, carol)
    by_bob = await add_text(hub, bob, "Bob's", "Granite countertops.", conversation_id=conversation_id)
    by_carol = await add_text(hub, carol, "Carol's", "Granite quarries.", conversation_id=conversation_id)
    await hub.call("blocks.add", {"agent": bob.agent_id}, token=alice.access_token)
    listed = await hub.call("documents.list", {"conversation_id": conversation_id}, token=alice.access_token)
    assert [d["document_id"] for d in listed["items"]] == [by_carol["document_id"]]
    found = await search(hub, alice, "granite", conversation_id=conversation_id)
    assert [hit["document_id"] for hit in found] == [by_carol["document_id"]]
    with raises_code("not_found"):
        await hub.call("documents.get", {"document_id": by_bob["document_id"]}, token=alice.access_token)
    listed = await hub.call("documents.list", {"conversation_id": conversation_id}, token=carol.access_token)
    assert len(listed["items"]) == 2  # only who blocks stops seeing


async def test_deleting_a_document_erases_its_passages_index_and_bytes(hub: HubClient, alice: Agent) -> None:
    word = f"zq{uuid.uuid4().hex[:12]}"
    document = await add_text(hub, alice, "Secret", f"The launch code is {word}.")
    assert await stored(hub.server, word)  # a control: the test looks where the hub writes
    await hub.call("documents.delete", {"document_id": document["document_id"]}, token=alice.access_token)
    with anyio.fail_after(WAIT):
        while await stored(hub.server, word):
            await anyio.sleep(0.1)
    progress = [e for e in await all_events(hub, alice) if e["type"] == "documents.progress"]
    assert all(e["document"] is None for e in progress)  # no event keeps a snapshot of a deleted document
    store = await hub.call("documents.store", {}, token=alice.access_token)
    assert (store["documents"], store["bytes_used"]) == (0, 0)


@diagonal
async def test_an_ingestion_killed_midway_resumes_after_a_restart_without_duplicate_passages(
    start_hub: ServerFactory,
) -> None:
    server = start_hub()
    text = "\n\n".join(f"Chapter {i}: " + "the river bends and the mill turns. " * 40 for i in range(300))
    async with HubClient(server) as hub:
        agent = await hub.register("crash")
        added = await hub.call("documents.add", {"title": "Long book", "text": text}, token=agent.access_token)
        with anyio.fail_after(WAIT):  # kill it once ingestion has begun
            while (await hub.call("documents.get", {"document_id": added["document_id"]},
                                  token=agent.access_token))["state"] == "queued":
                await anyio.sleep(0.01)
    await anyio.to_thread.run_sync(server.kill)
    await anyio.to_thread.run_sync(server.launch)
    async with HubClient(server) as hub:
        done = await settled(hub, agent, added["document_id"])
        assert done["state"] == "ready"
        page = await hub.call("documents.search", {"query": "river mill", "limit": 50, "mode": "lexical",
                                                   "document_ids": [added["document_id"]]}, token=agent.access_token)
        indexes = [p["citation"]["passage_index"] for hit in page["items"] for p in hit["passages"]]
        assert len(indexes) == len(set(indexes)) == 50
        whole = await hub.call("documents.text", {"document_id": added["document_id"]}, token=agent.access_token)
        assert " ".join(whole["text"].split()) == " ".join(text.split())
        audit = await hub.call("documents.audit", {"document_id": added["document_id"]}, token=agent.access_token)
        assert [e["action"] for e in audit["items"]].count("ingest_started") >= 1


def test_the_eta_is_the_rounds_rate_so_far_applied_to_what_is_left() -> None:
    now = datetime.now(UTC)
    round_row = {"round_total": 10, "round_done": 4, "round_failed": 1, "round_started_at": now - timedelta(seconds=40),
                 "current_document_id": "doc_x"}
    status = status_of(round_row, "Chapter 5", now)  # type: ignore[arg-type]
    assert (status.state, status.percent, status.eta_seconds, status.current_title) == ("in_progress", 40.0, 60.0,
                                                                                        "Chapter 5")
    finished = status_of({**round_row, "round_done": 10}, None, now)  # type: ignore[arg-type]
    assert (finished.state, finished.eta_seconds) == ("failed", 0.0)
    assert status_of(None, None, now).state == "idle"
