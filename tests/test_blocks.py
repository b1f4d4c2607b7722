"""Blocks of agents and of conversations (docs/design.md §4), and what unblocking brings back."""

from .client import Agent, HubClient
from .messaging import all_events, bodies, direct, group, head, raises_code, send


async def _block(hub: HubClient, blocker: Agent, **target: str) -> dict[str, str]:
    return await hub.call("blocks.add", target, token=blocker.access_token)


async def _unread(hub: HubClient, agent: Agent, conversation_id: str) -> int:
    view = await hub.call("conversations.get", {"conversation_id": conversation_id}, token=agent.access_token)
    return int(view["unread_count"])


async def test_a_blocked_agent_cannot_open_or_write_into_your_direct_conversation(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await direct(hub, alice, bob)
    await send(hub, bob, conversation_id, "before the block")
    block = await _block(hub, alice, agent=bob.handle)
    assert block["kind"] == "agent" and block["agent_id"] == bob.agent_id and block["conversation_id"] is None
    with raises_code("blocked"):
        await hub.call("conversations.open_direct", {"agent": alice.handle}, token=bob.access_token)
    with raises_code("blocked"):
        await send(hub, bob, conversation_id, "let me talk")
    with raises_code("blocked"):
        await hub.call("messages.send", {"to": alice.agent_id, "body": "by handle"}, token=bob.access_token)
    assert await bodies(hub, bob, conversation_id) == ["before the block"]
    await hub.call("blocks.remove", {"block_id": block["block_id"]}, token=alice.access_token)
    await send(hub, bob, conversation_id, "after the block")
    assert await bodies(hub, alice, conversation_id) == ["before the block", "after the block"]


async def test_a_blocked_agent_cannot_start_a_direct_conversation_at_all(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    await _block(hub, alice, agent=bob.agent_id)
    with raises_code("blocked"):
        await hub.call("messages.send", {"to": alice.handle, "body": "hello?"}, token=bob.access_token)
    assert (await hub.call("conversations.list", {}, token=alice.access_token))["items"] == []
    assert await all_events(hub, alice) == []


async def test_in_a_shared_group_a_blocked_agents_messages_are_not_pushed_listed_or_counted(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, carol, alice, bob)
    await send(hub, bob, conversation_id, "visible before")
    await _block(hub, alice, agent=bob.agent_id)
    cursor = await head(hub, alice)
    await send(hub, bob, conversation_id, "hidden while blocked")
    await send(hub, carol, conversation_id, "carol speaks")
    assert await bodies(hub, alice, conversation_id) == ["carol speaks"]
    assert await bodies(hub, carol, conversation_id) == ["visible before", "hidden while blocked", "carol speaks"]
    assert [e["message"]["body"] for e in await all_events(hub, alice, after=cursor)] == ["carol speaks"]
    assert await _unread(hub, alice, conversation_id) == 1
    listed = await hub.call("conversations.list", {}, token=alice.access_token)
    assert listed["items"][0]["last_message"]["snippet"] == "carol speaks"


async def test_unblocking_an_agent_shows_its_messages_again_including_those_sent_meanwhile(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, bob, alice)
    block = await _block(hub, alice, agent=bob.handle)
    cursor = await head(hub, alice)
    hidden = await send(hub, bob, conversation_id, "sent while blocked")
    with raises_code("not_found"):
        await hub.call("messages.get", {"message_id": hidden["message_id"]}, token=alice.access_token)
    await hub.call("blocks.remove", {"block_id": block["block_id"]}, token=alice.access_token)
    assert await bodies(hub, alice, conversation_id) == ["sent while blocked"]
    assert await _unread(hub, alice, conversation_id) == 1
    # The event withheld during the block is not replayed: it was never delivered to alice.
    assert await all_events(hub, alice, after=cursor) == []
    await send(hub, bob, conversation_id, "after unblocking")
    assert [e["message"]["body"] for e in await all_events(hub, alice, after=cursor)] == ["after unblocking"]


async def test_a_blocked_agent_cannot_add_you_to_a_group(hub: HubClient, alice: Agent, bob: Agent) -> None:
    await _block(hub, alice, agent=bob.agent_id)
    with raises_code("blocked"):
        await group(hub, bob, alice)
    conversation_id = await group(hub, bob)
    with raises_code("blocked"):
        await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [alice.handle]},
                       token=bob.access_token)
    assert (await hub.call("conversations.list", {}, token=alice.access_token))["items"] == []


async def test_a_blocked_conversation_is_not_pushed_or_counted_but_still_readable(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, bob, alice)
    block = await _block(hub, alice, conversation_id=conversation_id)
    assert block["kind"] == "conversation" and block["conversation_id"] == conversation_id
    cursor = await head(hub, alice)
    await send(hub, bob, conversation_id, "into the void")
    assert await all_events(hub, alice, after=cursor) == []
    view = await hub.call("conversations.get", {"conversation_id": conversation_id}, token=alice.access_token)
    assert view["blocked"] is True and view["unread_count"] == 0
    assert await bodies(hub, alice, conversation_id) == ["into the void"]
    await hub.call("blocks.remove", {"block_id": block["block_id"]}, token=alice.access_token)
    assert await _unread(hub, alice, conversation_id) == 1
    await send(hub, bob, conversation_id, "heard again")
    assert [e["message"]["body"] for e in await all_events(hub, alice, after=cursor)] == ["heard again"]


async def test_nobody_can_add_you_back_to_a_blocked_conversation_until_you_unblock(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, bob, alice)
    await hub.call("conversations.leave", {"conversation_id": conversation_id}, token=alice.access_token)
    block = await _block(hub, alice, conversation_id=conversation_id)  # a former member may still block it
    with raises_code("blocked"):
        await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [alice.agent_id]},
                       token=bob.access_token)
    with raises_code("not_found"):
        await hub.call("conversations.get", {"conversation_id": conversation_id}, token=alice.access_token)
    await hub.call("blocks.remove", {"block_id": block["block_id"]}, token=alice.access_token)
    await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [alice.agent_id]},
                   token=bob.access_token)
    assert (await hub.call("conversations.get", {"conversation_id": conversation_id},
                           token=alice.access_token))["your_role"] == "member"


async def test_bad_blocks_are_refused_and_repeats_return_the_same_block(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    stranger = await group(hub, bob)
    for params, code in [
        ({"agent": alice.handle}, "invalid_request"),
        ({"agent": alice.agent_id}, "invalid_request"),
        ({"agent": "nobody-here-at-all"}, "not_found"),
        ({"conversation_id": stranger}, "not_found"),
        ({"conversation_id": "cnv_01hzzzzzzzzzzzzzzzzzzzzzzz"}, "not_found"),
        ({}, "invalid_request"),
        ({"agent": bob.handle, "conversation_id": stranger}, "invalid_request"),
    ]:
        with raises_code(code):
            await hub.call("blocks.add", params, token=alice.access_token)
    assert (await hub.call("blocks.list", {}, token=alice.access_token))["items"] == []
    first = await _block(hub, alice, agent=bob.handle)
    assert await _block(hub, alice, agent=bob.agent_id) == first
    assert (await hub.call("blocks.list", {}, token=alice.access_token))["items"] == [first]


async def test_blocks_are_listed_page_by_page_and_removable_only_by_their_owner(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    others = [await hub.register(f"target{i}") for i in range(3)]
    made = [await _block(hub, alice, agent=agent.agent_id) for agent in others]
    seen, cursor = [], None
    while True:
        page = await hub.call("blocks.list", {"limit": 2} | ({"cursor": cursor} if cursor else {}),
                              token=alice.access_token)
        seen += page["items"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == made
    with raises_code("not_found"):
        await hub.call("blocks.remove", {"block_id": made[0]["block_id"]}, token=bob.access_token)
    with raises_code("invalid_request"):
        await hub.call("blocks.list", {"cursor": "not-a-cursor"}, token=alice.access_token)
    removed = await hub.call("blocks.remove", {"block_id": made[0]["block_id"]}, token=alice.access_token)
    assert removed == made[0]
    with raises_code("not_found"):
        await hub.call("blocks.remove", {"block_id": made[0]["block_id"]}, token=alice.access_token)
    assert (await hub.call("blocks.list", {}, token=alice.access_token))["items"] == made[1:]
