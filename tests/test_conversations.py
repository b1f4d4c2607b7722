"""Direct and group conversations, membership and roles, black-box against real hubs."""

from typing import Any

from .client import Agent, HubClient
from .conftest import ServerFactory
from .messaging import all_events, direct, group, head, raises_code, send, timeline

UNKNOWN_CONVERSATION = "cnv_01hzzzzzzzzzzzzzzzzzzzzzzz"


async def _get(hub: HubClient, agent: Agent, conversation_id: str) -> dict[str, Any]:
    return await hub.call("conversations.get", {"conversation_id": conversation_id}, token=agent.access_token)


def _roles(conversation: dict[str, Any]) -> dict[str, str]:
    return {member["agent_id"]: member["role"] for member in conversation["members"]}


# -- direct conversations -------------------------------------------------------------------------


async def test_open_direct_is_get_or_create_for_the_pair_from_either_side(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    first = await hub.call("conversations.open_direct", {"agent": bob.handle}, token=alice.access_token)
    again = await hub.call("conversations.open_direct", {"agent": bob.agent_id}, token=alice.access_token)
    reverse = await hub.call("conversations.open_direct", {"agent": alice.handle.upper()}, token=bob.access_token)
    assert first["conversation_id"] == again["conversation_id"] == reverse["conversation_id"]
    assert first["kind"] == "direct" and first["peer_id"] == bob.agent_id and reverse["peer_id"] == alice.agent_id
    assert first["member_count"] == 2 and first["title"] is None
    [created] = await timeline(hub, bob, first["conversation_id"])
    assert created["seq"] == 1 and created["kind"] == "system"
    assert created["system"]["action"] == "created"
    assert sorted(created["system"]["agent_ids"]) == sorted([alice.agent_id, bob.agent_id])


async def test_open_direct_with_yourself_or_an_unknown_agent_is_refused(hub: HubClient, alice: Agent) -> None:
    with raises_code("invalid_request"):
        await hub.call("conversations.open_direct", {"agent": alice.handle}, token=alice.access_token)
    with raises_code("not_found"):
        await hub.call("conversations.open_direct", {"agent": "nobody-here-at-all"}, token=alice.access_token)
    listed = await hub.call("conversations.list", {}, token=alice.access_token)
    assert listed["items"] == []


async def test_group_operations_on_a_direct_conversation_are_invalid(hub: HubClient, alice: Agent, bob: Agent) -> None:
    carol = await hub.register("carol")
    conversation_id = await direct(hub, alice, bob)
    for method, params in [
        ("conversations.update", {"title": "x"}),
        ("conversations.add_members", {"agents": [carol.agent_id]}),
        ("conversations.remove_member", {"agent_id": bob.agent_id}),
        ("conversations.set_role", {"agent_id": bob.agent_id, "role": "admin"}),
        ("conversations.leave", {}),
    ]:
        with raises_code("invalid_request"):
            await hub.call(method, {"conversation_id": conversation_id, **params}, token=alice.access_token)
    assert (await _get(hub, alice, conversation_id))["member_count"] == 2


# -- groups ---------------------------------------------------------------------------------------


async def test_create_group_makes_the_creator_owner_and_announces_it_to_every_member(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol = await hub.register("carol")
    created = await hub.call(
        "conversations.create_group", {"title": "Research", "topic": "papers", "members": [bob.handle, carol.agent_id]},
        token=alice.access_token,
    )
    assert created["kind"] == "group" and created["title"] == "Research" and created["topic"] == "papers"
    assert _roles(created) == {alice.agent_id: "owner", bob.agent_id: "member", carol.agent_id: "member"}
    assert created["your_role"] == "owner" and created["last_seq"] == 1
    for agent in (alice, bob, carol):
        [event] = [e for e in await all_events(hub, agent) if e["conversation_id"] == created["conversation_id"]]
        assert event["type"] == "conversation.created" and event["actor_id"] == alice.agent_id
        assert event["conversation"]["title"] == "Research" and event["message"]["system"]["action"] == "created"


async def test_create_group_with_a_duplicate_or_unknown_member_creates_nothing(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    for members, code in [
        ([bob.agent_id, bob.handle], "invalid_request"),
        ([alice.agent_id], "invalid_request"),
        ([bob.agent_id, "nobody-here-at-all"], "not_found"),
        (["x"] * 101, "invalid_request"),
    ]:
        with raises_code(code):
            await hub.call("conversations.create_group", {"title": "g", "members": members}, token=alice.access_token)
    for bad in [{"title": ""}, {"title": "t" * 129}, {"title": "g", "topic": "t" * 1025}, {"title": "g", "extra": 1}]:
        with raises_code("invalid_request"):
            await hub.call("conversations.create_group", bad, token=alice.access_token)
    assert (await hub.call("conversations.list", {}, token=bob.access_token))["items"] == []
    assert (await hub.call("conversations.list", {}, token=alice.access_token))["items"] == []


async def test_a_group_is_limited_to_the_configured_number_of_members(start_hub: ServerFactory) -> None:
    async with HubClient(start_hub(max_group_members="3")) as hub:
        alice, bob, carol, dave = [await hub.register(name) for name in ("alice", "bob", "carol", "dave")]
        with raises_code("invalid_request") as caught:
            await group(hub, alice, bob, carol, dave)
        assert caught.value.details["max_members"] == 3
        conversation_id = await group(hub, alice, bob)
        await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [carol.handle]},
                       token=alice.access_token)
        with raises_code("invalid_request"):
            await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [dave.handle]},
                           token=alice.access_token)
        assert (await _get(hub, alice, conversation_id))["member_count"] == 3


async def test_a_non_member_gets_not_found_for_everything_about_a_conversation(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    eve = await hub.register("eve")
    conversation_id = await group(hub, alice, bob)
    message = await send(hub, alice, conversation_id, "secret plans")
    calls = [
        ("conversations.get", {}),
        ("conversations.update", {"title": "mine now"}),
        ("conversations.add_members", {"agents": [eve.agent_id]}),
        ("conversations.remove_member", {"agent_id": bob.agent_id}),
        ("conversations.set_role", {"agent_id": eve.agent_id, "role": "owner"}),
        ("conversations.leave", {}),
        ("messages.list", {}),
        ("messages.send", {"body": "let me in"}),
        ("messages.mark_read", {"seq": 1}),
    ]
    for target in (conversation_id, UNKNOWN_CONVERSATION, "not-even-an-id"):
        for method, params in calls:
            with raises_code("not_found"):
                await hub.call(method, {"conversation_id": target, **params}, token=eve.access_token)
    for method, params in [("messages.get", {}), ("messages.edit", {"body": "x"}), ("messages.delete", {})]:
        with raises_code("not_found"):
            await hub.call(method, {"message_id": message["message_id"], **params}, token=eve.access_token)
    with raises_code("not_found"):
        await hub.call("blocks.add", {"conversation_id": conversation_id}, token=eve.access_token)
    assert await all_events(hub, eve) == []
    assert [m["body"] for m in await timeline(hub, alice, conversation_id)] == [None, "secret plans"]


async def test_conversation_list_is_ordered_by_last_activity_with_unread_counts_and_previews(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol = await hub.register("carol")
    first = await group(hub, alice, bob, title="first")
    second = await direct(hub, alice, bob)
    third = await group(hub, carol, bob, title="third")
    await send(hub, alice, first, "hello in first")
    await send(hub, alice, second, "one")
    await send(hub, alice, second, "two")
    listed = await hub.call("conversations.list", {}, token=bob.access_token)
    assert [c["conversation_id"] for c in listed["items"]] == [second, first, third]
    by_id = {c["conversation_id"]: c for c in listed["items"]}
    assert by_id[second]["unread_count"] == 2 and by_id[second]["last_message"]["snippet"] == "two"
    assert by_id[first]["unread_count"] == 1 and by_id[first]["last_message"]["sender_id"] == alice.agent_id
    assert by_id[third]["unread_count"] == 0 and by_id[third]["last_message"]["kind"] == "system"
    assert listed["next_cursor"] is None
    alice_list = await hub.call("conversations.list", {}, token=alice.access_token)
    alice_view = {c["conversation_id"]: c for c in alice_list["items"]}
    assert alice_view[second]["unread_count"] == 0  # sending marks your own messages read
    await send(hub, carol, third, "now third is newest")
    pages: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await hub.call("conversations.list", params, token=bob.access_token)
        pages += [c["conversation_id"] for c in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert pages == [third, second, first]


async def test_conversation_list_refuses_a_cursor_it_did_not_issue(hub: HubClient, alice: Agent) -> None:
    for cursor in ("garbage", "WzEsMl0", "eyJhIjoxfQ"):
        with raises_code("invalid_request"):
            await hub.call("conversations.list", {"cursor": cursor}, token=alice.access_token)


async def test_owners_and_admins_update_title_and_topic_and_members_may_not(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob, carol, title="before")
    await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": bob.agent_id,
                                              "role": "admin"}, token=alice.access_token)
    updated = await hub.call("conversations.update", {"conversation_id": conversation_id, "title": "after",
                                                      "topic": "news"}, token=bob.access_token)
    assert updated["title"] == "after" and updated["topic"] == "news"
    with raises_code("forbidden"):
        await hub.call("conversations.update", {"conversation_id": conversation_id, "title": "carol's"},
                       token=carol.access_token)
    for bad in [{}, {"title": None}, {"title": ""}]:
        with raises_code("invalid_request"):
            await hub.call("conversations.update", {"conversation_id": conversation_id, **bad},
                           token=alice.access_token)
    cleared = await hub.call("conversations.update", {"conversation_id": conversation_id, "topic": None},
                             token=alice.access_token)
    assert cleared["title"] == "after" and cleared["topic"] is None
    notices = [m["system"] for m in await timeline(hub, carol, conversation_id) if m["system"]["action"] == "updated"]
    assert [(n["fields"], n["title"], n["topic"]) for n in notices] == [(["title", "topic"], "after", "news"),
                                                                        (["topic"], None, None)]
    events = [e for e in await all_events(hub, carol) if e["type"] == "conversation.updated"]
    assert [e["conversation"]["topic"] for e in events] == ["news", None]


# -- membership -----------------------------------------------------------------------------------


async def test_new_members_see_the_timeline_from_their_joining_on(hub: HubClient, alice: Agent, bob: Agent) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob)
    before = await send(hub, alice, conversation_id, "before carol")
    added = await hub.call("conversations.add_members", {"conversation_id": conversation_id,
                                                         "agents": [carol.handle]}, token=alice.access_token)
    assert _roles(added)[carol.agent_id] == "member"
    await send(hub, bob, conversation_id, "after carol")
    seen = await timeline(hub, carol, conversation_id)
    assert [(m["kind"], m["body"]) for m in seen] == [("system", None), ("message", "after carol")]
    assert seen[0]["system"] == {"action": "members_added", "agent_ids": [carol.agent_id], "role": "member",
                                 "fields": [], "title": None, "topic": None}
    with raises_code("not_found"):
        await hub.call("messages.get", {"message_id": before["message_id"]}, token=carol.access_token)
    [joined] = [e for e in await all_events(hub, carol) if e["type"] == "members.added"]
    assert joined["conversation"]["conversation_id"] == conversation_id
    assert (await _get(hub, carol, conversation_id))["unread_count"] == 1


async def test_adding_members_checks_roles_duplicates_and_existing_members_and_is_all_or_nothing(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol, dave = await hub.register("carol"), await hub.register("dave")
    conversation_id = await group(hub, alice, bob)
    last_seq = (await _get(hub, alice, conversation_id))["last_seq"]
    refused = [
        (bob, {"agents": [carol.agent_id]}, "forbidden"),
        (alice, {"agents": [carol.agent_id, carol.handle]}, "invalid_request"),
        (alice, {"agents": [carol.agent_id, bob.agent_id]}, "conflict"),
        (alice, {"agents": [carol.agent_id, "nobody-here-at-all"]}, "not_found"),
        (alice, {"agents": []}, "invalid_request"),
        (alice, {"agents": ["x"] * 101}, "invalid_request"),
        (alice, {"agents": [carol.agent_id], "role": "emperor"}, "invalid_request"),
    ]
    for agent, params, code in refused:
        with raises_code(code):
            await hub.call("conversations.add_members", {"conversation_id": conversation_id, **params},
                           token=agent.access_token)
    after = await _get(hub, alice, conversation_id)
    assert after["last_seq"] == last_seq and set(_roles(after)) == {alice.agent_id, bob.agent_id}
    await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": bob.agent_id,
                                              "role": "admin"}, token=alice.access_token)
    with raises_code("forbidden"):  # only owners add admins
        await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [dave.agent_id],
                                                     "role": "admin"}, token=bob.access_token)
    added = await hub.call("conversations.add_members",
                           {"conversation_id": conversation_id, "agents": [carol.agent_id, dave.handle]},
                           token=bob.access_token)
    assert _roles(added) == {alice.agent_id: "owner", bob.agent_id: "admin", carol.agent_id: "member",
                             dave.agent_id: "member"}


async def test_a_removed_member_gets_its_removal_and_nothing_after_it(hub: HubClient, alice: Agent, bob: Agent) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob, carol)
    old = await send(hub, alice, conversation_id, "carol saw this")
    result = await hub.call("conversations.remove_member", {"conversation_id": conversation_id,
                                                            "agent_id": carol.agent_id}, token=alice.access_token)
    assert carol.agent_id not in _roles(result)
    last = (await all_events(hub, carol))[-1]
    assert last["type"] == "member.removed" and last["message"]["system"]["agent_ids"] == [carol.agent_id]
    await send(hub, alice, conversation_id, "after carol left")
    await hub.call("conversations.update", {"conversation_id": conversation_id, "title": "new"},
                   token=alice.access_token)
    assert await all_events(hub, carol, after=last["cursor"]) == []
    for method, params in [("conversations.get", {"conversation_id": conversation_id}),
                           ("messages.list", {"conversation_id": conversation_id}),
                           ("messages.get", {"message_id": old["message_id"]})]:
        with raises_code("not_found"):
            await hub.call(method, params, token=carol.access_token)
    assert conversation_id not in [c["conversation_id"] for c in
                                   (await hub.call("conversations.list", {}, token=carol.access_token))["items"]]
    with raises_code("not_found"):  # removing a non-member
        await hub.call("conversations.remove_member", {"conversation_id": conversation_id, "agent_id": carol.agent_id},
                       token=alice.access_token)


async def test_who_may_remove_whom(hub: HubClient, alice: Agent, bob: Agent) -> None:
    carol, dave = await hub.register("carol"), await hub.register("dave")
    conversation_id = await group(hub, alice, bob, carol, dave)
    for agent in (bob, carol):
        await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": agent.agent_id,
                                                  "role": "admin"}, token=alice.access_token)
    for actor, target, code in [(dave, carol, "forbidden"), (bob, carol, "forbidden"), (bob, alice, "forbidden"),
                                (bob, bob, "invalid_request")]:
        with raises_code(code):
            await hub.call("conversations.remove_member", {"conversation_id": conversation_id,
                                                           "agent_id": target.agent_id}, token=actor.access_token)
    await hub.call("conversations.remove_member", {"conversation_id": conversation_id, "agent_id": dave.handle},
                   token=bob.access_token)
    await hub.call("conversations.remove_member", {"conversation_id": conversation_id, "agent_id": carol.agent_id},
                   token=alice.access_token)
    assert set(_roles(await _get(hub, alice, conversation_id))) == {alice.agent_id, bob.agent_id}


async def test_only_owners_change_roles_and_a_group_keeps_an_owner(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    with raises_code("forbidden"):
        await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": bob.agent_id,
                                                  "role": "owner"}, token=bob.access_token)
    with raises_code("conflict"):
        await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": alice.agent_id,
                                                  "role": "member"}, token=alice.access_token)
    member = await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": bob.handle,
                                                       "role": "owner"}, token=alice.access_token)
    assert member["agent_id"] == bob.agent_id and member["role"] == "owner"
    await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": alice.agent_id,
                                              "role": "member"}, token=alice.access_token)
    assert _roles(await _get(hub, bob, conversation_id)) == {alice.agent_id: "member", bob.agent_id: "owner"}
    changes = [e["message"]["system"] for e in await all_events(hub, alice) if e["type"] == "member.role_changed"]
    assert [(c["agent_ids"], c["role"]) for c in changes] == [([bob.agent_id], "owner"), ([alice.agent_id], "member")]


async def test_the_last_owner_leaving_hands_ownership_to_the_longest_standing_admin(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol, dave = await hub.register("carol"), await hub.register("dave")
    conversation_id = await group(hub, alice, bob)
    for agent in (carol, dave):
        await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [agent.agent_id]},
                       token=alice.access_token)
    await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": dave.agent_id,
                                              "role": "admin"}, token=alice.access_token)
    assert await hub.call("conversations.leave", {"conversation_id": conversation_id}, token=alice.access_token) == {}
    assert _roles(await _get(hub, bob, conversation_id)) == {bob.agent_id: "member", carol.agent_id: "member",
                                                             dave.agent_id: "owner"}
    await hub.call("conversations.leave", {"conversation_id": conversation_id}, token=dave.access_token)
    assert _roles(await _get(hub, bob, conversation_id)) == {bob.agent_id: "owner", carol.agent_id: "member"}
    actions = [m["system"]["action"] for m in await timeline(hub, carol, conversation_id)][-4:]
    assert actions == ["member_left", "role_changed", "member_left", "role_changed"]
    with raises_code("not_found"):
        await hub.call("conversations.leave", {"conversation_id": conversation_id}, token=alice.access_token)


async def test_a_member_who_left_sees_nothing_after_leaving_and_can_be_added_back(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    await hub.call("conversations.leave", {"conversation_id": conversation_id}, token=bob.access_token)
    cursor = await head(hub, bob)
    await send(hub, alice, conversation_id, "while bob was away")
    assert await all_events(hub, bob, after=cursor) == []
    await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [bob.agent_id]},
                   token=alice.access_token)
    await send(hub, alice, conversation_id, "welcome back")
    assert [m["body"] for m in await timeline(hub, bob, conversation_id)] == [None, "welcome back"]
    assert [e["type"] for e in await all_events(hub, bob, after=cursor)] == ["members.added", "message.created"]
