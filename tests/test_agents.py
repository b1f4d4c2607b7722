"""Agent profiles and discovery, black-box over real sockets: get, search with cursors, update."""

import base64
import uuid
from datetime import datetime
from typing import Any

import pytest

from .client import Agent, HubClient, error_of, unique_handle


def _marker() -> str:
    """A word no other test's agents contain, to keep searches on the shared hub to our own agents."""
    return "m" + uuid.uuid4().hex[:12]


async def _update(hub: HubClient, agent: Agent, **changes: Any) -> dict[str, Any]:
    profile: dict[str, Any] = await hub.call("agents.update_profile", changes, token=agent.access_token)
    return profile


async def _get(hub: HubClient, ref: str, token: str) -> dict[str, Any]:
    profile: dict[str, Any] = await hub.call("agents.get", {"agent": ref}, token=token)
    return profile


async def _search_all(hub: HubClient, token: str, limit: int, **params: Any) -> list[list[str]]:
    """Every page of a search, walked with its cursors, as lists of handles."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await hub.call("agents.search", {**params, "limit": limit, **({"cursor": cursor} if cursor else {})},
                              token=token)
        pages.append([profile["handle"] for profile in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor never ends"


# -- agents.get -----------------------------------------------------------------------------------


async def test_get_finds_an_agent_by_id_and_by_handle_in_any_case(hub: HubClient, alice: Agent, bob: Agent) -> None:
    by_id = await _get(hub, bob.agent_id, alice.access_token)
    by_handle = await _get(hub, bob.handle, alice.access_token)
    by_upper = await _get(hub, bob.handle.upper(), alice.access_token)

    assert by_id == by_handle == by_upper
    assert by_id["agent_id"] == bob.agent_id and by_id["handle"] == bob.handle
    assert set(by_id) == {"agent_id", "handle", "display_name", "description", "tags", "visibility", "metadata",
                          "created_at", "updated_at"}


async def test_get_of_an_unknown_agent_is_not_found(hub: HubClient, alice: Agent) -> None:
    for ref in (unique_handle("nobody"), "agt_00000000000000000000000000", "x"):
        assert (await error_of(_get(hub, ref, alice.access_token))).code == "not_found", ref


async def test_get_and_search_need_a_credential(hub: HubClient, alice: Agent) -> None:
    assert (await error_of(hub.call("agents.get", {"agent": alice.handle}))).code == "unauthorized"
    assert (await error_of(hub.call("agents.search", {"q": "a"}))).code == "unauthorized"


# -- agents.search --------------------------------------------------------------------------------


async def test_search_by_text_matches_handle_name_and_description_and_walks_every_page(
    hub: HubClient, alice: Agent
) -> None:
    marker = _marker()
    in_handle = await hub.register(f"{marker}-h")
    in_name = await hub.register("named", display_name=f"The {marker.upper()} bot")
    in_description = await hub.register("described", description=f"I index {marker} documents")
    await hub.register("unrelated", description="nothing to see")

    pages = await _search_all(hub, alice.access_token, 1, q=marker)

    assert all(len(page) == 1 for page in pages)
    found = [handle for page in pages for handle in page]
    assert found == sorted({in_handle.handle, in_name.handle, in_description.handle})


async def test_search_by_tag_and_by_tag_with_text(hub: HubClient, alice: Agent) -> None:
    tag, marker = _marker(), _marker()
    tagged = [await hub.register("tagged") for _ in range(3)]
    for agent in tagged:
        await _update(hub, agent, tags=["shared", tag])
    await _update(hub, tagged[0], description=f"the {marker} one")
    untagged = await hub.register("untagged", description=f"the {marker} one too")

    by_tag = await _search_all(hub, alice.access_token, 2, tag=tag.upper())
    both = await _search_all(hub, alice.access_token, 50, tag=tag, q=marker)

    assert [len(page) for page in by_tag] == [2, 1]
    assert [handle for page in by_tag for handle in page] == sorted(agent.handle for agent in tagged)
    assert both == [[tagged[0].handle]]
    assert untagged.handle not in both[0]


async def test_search_treats_like_wildcards_in_the_text_literally(hub: HubClient, alice: Agent) -> None:
    marker = _marker()
    literal = await hub.register("literal", description=f"{marker}_%x")
    await hub.register("other", description=f"{marker}ab-x")

    pages = await _search_all(hub, alice.access_token, 50, q=f"{marker}_%")

    assert pages == [[literal.handle]]


async def test_search_with_no_match_is_one_empty_page(hub: HubClient, alice: Agent) -> None:
    page = await hub.call("agents.search", {"q": _marker()}, token=alice.access_token)

    assert page == {"items": [], "next_cursor": None}


async def test_unlisted_agents_are_not_found_by_search_but_are_by_get(hub: HubClient, alice: Agent) -> None:
    marker = _marker()
    hidden = await hub.register("hidden", description=marker)
    shown = await hub.register("shown", description=marker)

    profile = await _update(hub, hidden, visibility="unlisted")

    assert profile["visibility"] == "unlisted"
    assert await _search_all(hub, alice.access_token, 50, q=marker) == [[shown.handle]]
    assert (await _get(hub, hidden.handle, alice.access_token))["visibility"] == "unlisted"
    await _update(hub, hidden, visibility="public")
    assert await _search_all(hub, alice.access_token, 50, q=marker) == [sorted([hidden.handle, shown.handle])]


@pytest.mark.parametrize(
    "cursor",
    ["!!!!", "a", "%%%", base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(), "Tk9QRQ", "x" * 513, ""],
    ids=["punctuation", "one-char", "percent", "not-utf8", "not-a-handle", "too-long", "empty"],
)
async def test_search_with_a_cursor_the_hub_did_not_issue_is_invalid(
    hub: HubClient, alice: Agent, cursor: str
) -> None:
    error = await error_of(hub.call("agents.search", {"q": "a", "cursor": cursor}, token=alice.access_token))

    assert error.code == "invalid_request"
    assert error.jsonrpc_code == -32602


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"q": ""}, {"q": "x" * 129}, {"tag": "bad tag"}, {"page": 2}],
    ids=["limit-0", "limit-201", "empty-text", "long-text", "bad-tag", "unknown-field"],
)
async def test_search_refuses_invalid_params(hub: HubClient, alice: Agent, params: dict[str, Any]) -> None:
    error = await error_of(hub.call("agents.search", params, token=alice.access_token))

    assert error.code == "invalid_request"
    assert error.details["errors"]


# -- agents.update_profile ------------------------------------------------------------------------


async def test_update_profile_changes_only_the_fields_given(hub: HubClient, alice: Agent) -> None:
    created = await _get(hub, alice.agent_id, alice.access_token)

    first = await _update(hub, alice, display_name="Alice", description="Researches things")
    second = await _update(hub, alice, tags=["research", "nlp"])

    assert first["display_name"] == "Alice" and first["description"] == "Researches things"
    assert second["display_name"] == "Alice" and second["description"] == "Researches things"
    assert second["tags"] == ["research", "nlp"]
    assert second["handle"] == alice.handle and second["visibility"] == "public"
    assert second["created_at"] == created["created_at"]
    assert datetime.fromisoformat(second["updated_at"]) >= datetime.fromisoformat(first["updated_at"])
    assert datetime.fromisoformat(first["updated_at"]) >= datetime.fromisoformat(created["updated_at"])
    assert await _get(hub, alice.handle, alice.access_token) == second


async def test_null_clears_an_optional_field_and_leaves_the_others(hub: HubClient, alice: Agent) -> None:
    await _update(hub, alice, display_name="Alice", description="About", tags=["one"], metadata={"k": 1})

    cleared = await _update(hub, alice, display_name=None, tags=None, metadata=None)

    assert cleared["display_name"] is None
    assert cleared["tags"] == []
    assert cleared["metadata"] == {}
    assert cleared["description"] == "About"


async def test_null_is_refused_for_the_handle_and_the_visibility(hub: HubClient, alice: Agent) -> None:
    for field in ("handle", "visibility"):
        error = await error_of(hub.call("agents.update_profile", {field: None, "display_name": "changed"},
                                        token=alice.access_token))
        assert error.code == "invalid_request", field
    profile = await _get(hub, alice.agent_id, alice.access_token)
    assert profile["handle"] == alice.handle and profile["visibility"] == "public"
    assert profile["display_name"] is None


async def test_tags_are_normalized_deduplicated_and_kept_in_order(hub: HubClient, alice: Agent) -> None:
    profile = await _update(hub, alice, tags=["Zeta", "alpha", "ZETA", "x:y.z_1-2"])

    assert profile["tags"] == ["zeta", "alpha", "x:y.z_1-2"]
    assert (await _update(hub, alice, tags=[]))["tags"] == []


@pytest.mark.parametrize(
    "changes",
    [
        {"tags": ["has space"]},
        {"tags": ["-leading-dash"]},
        {"tags": ["t" * 33]},
        {"tags": [f"t{i}" for i in range(17)]},
        {"display_name": "x" * 65},
        {"description": "x" * 1025},
        {"visibility": "secret"},
        {"metadata": "not an object"},
        {"metadata": {"blob": "x" * 4096}},
        {"metadata": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}},
        {"metadata": {"a": [[[[[1]]]]]}},
        {"handle": "no"},
        {"nickname": "ali"},
        {"agent_id": "agt_00000000000000000000000000"},
    ],
    ids=["tag-space", "tag-dash", "tag-long", "too-many-tags", "long-name", "long-description", "bad-visibility",
         "metadata-not-object", "metadata-too-big", "metadata-too-deep", "metadata-deep-lists", "bad-handle",
         "unknown-field", "agent-id"],
)
async def test_update_profile_refuses_invalid_changes_and_writes_nothing(
    hub: HubClient, alice: Agent, changes: dict[str, Any]
) -> None:
    before = await _update(hub, alice, display_name="Before", metadata={"kept": True})

    error = await error_of(hub.call("agents.update_profile", {"description": "after", **changes},
                                    token=alice.access_token))

    assert error.code == "invalid_request"
    assert error.jsonrpc_code == -32602
    assert [item["field"].split(".")[0] for item in error.details["errors"]] == [next(iter(changes))]
    assert await _get(hub, alice.agent_id, alice.access_token) == before


async def test_metadata_up_to_the_limits_is_kept_as_given(hub: HubClient, alice: Agent) -> None:
    deep = {"a": {"b": {"c": {"d": [1, "two", None, True, 2.5]}}}}  # 5 levels, the most allowed
    big = {"blob": "x" * (4096 - len('{"blob":""}'))}

    assert (await _update(hub, alice, metadata=deep))["metadata"] == deep
    assert (await _update(hub, alice, metadata=big))["metadata"] == big


async def test_changing_the_handle_moves_the_agent_and_frees_the_old_handle(hub: HubClient, alice: Agent) -> None:
    new_handle = unique_handle("renamed")

    profile = await _update(hub, alice, handle=new_handle.upper())

    assert profile["handle"] == new_handle
    assert (await _get(hub, new_handle, alice.access_token))["agent_id"] == alice.agent_id
    assert (await error_of(_get(hub, alice.handle, alice.access_token))).code == "not_found"
    me = await hub.call("auth.whoami", token=alice.access_token)
    assert me["agent"]["handle"] == new_handle
    assert (await hub.call("auth.register", {"handle": alice.handle}))["handle"] == alice.handle


async def test_taking_another_agents_handle_is_a_conflict_and_changes_nothing(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    error = await error_of(hub.call("agents.update_profile", {"handle": bob.handle.upper(), "display_name": "Bob?"},
                                    token=alice.access_token))

    assert error.code == "conflict"
    assert error.details.get("field") == "handle"
    mine = await _get(hub, alice.agent_id, alice.access_token)
    assert mine["handle"] == alice.handle and mine["display_name"] is None
    assert (await _get(hub, bob.handle, alice.access_token))["agent_id"] == bob.agent_id


async def test_setting_the_handle_an_agent_already_has_is_not_a_conflict(hub: HubClient, alice: Agent) -> None:
    assert (await _update(hub, alice, handle=alice.handle))["handle"] == alice.handle


async def test_update_profile_changes_only_the_callers_own_profile(hub: HubClient, alice: Agent, bob: Agent) -> None:
    await _update(hub, alice, display_name="Only Alice")

    assert (await _get(hub, bob.agent_id, alice.access_token))["display_name"] is None
    assert (await error_of(hub.call("agents.update_profile", {"display_name": "x"}))).code == "unauthorized"
