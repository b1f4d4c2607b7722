"""Validation errors speak the API's language: each names its field and says what it must be, with no
pydantic wording ("Input should be …", "Value error, …", "Extra inputs are not permitted")."""

import json
from typing import Any, Final

import pytest
from pydantic import ValidationError

from hub.operations import OPERATIONS
from hub.validation import invalid_params

from .client import Agent, HubClient, RpcError
from .messaging import group

PYDANTIC_WORDING: Final = ("Input should", "Value error", "Extra inputs", "should have", "String should",
                           "List should", "Assertion failed", "Field required", "valid integer", "valid string")

WRONG_VALUES: Final[list[Any]] = [{}, [], "x" * 70_000, -1, 10**30, "", None, True, 1.5, ["a"] * 300, {"a": 1}]
"""A value of the wrong type, size or range for nearly every field."""


def refusals() -> list[tuple[str, dict[str, Any]]]:
    """Each field of each operation given each wrong value, beside an unknown field."""
    return [(name, {field: value, "no_such_field": 1})
            for name, op in sorted(OPERATIONS.items()) for field in op.params.model_fields for value in WRONG_VALUES]


def test_every_operations_validation_errors_name_the_field_in_the_apis_words() -> None:
    checked = 0
    for name, params in refusals():
        try:
            OPERATIONS[name].params.model_validate_json(json.dumps(params), strict=True)
        except ValidationError as error:
            refused = invalid_params(error, f"params for {name}")
        else:
            raise AssertionError(f"{name} took {params}")
        texts = [refused.message] + [item["message"] for item in refused.details["errors"]]
        assert not [text for text in texts if any(words in text for words in PYDANTIC_WORDING)], refused.to_dict()
        assert {"field": "no_such_field", "message": "unknown field", "type": "extra_forbidden"} in \
            refused.details["errors"]
        for item in refused.details["errors"]:
            assert set(item) == {"field", "message", "type"}
            # only a rule of several fields has none
            assert item["field"] or item["type"] == "value_error", (name, item)
        first = refused.details["errors"][0]
        assert refused.message.startswith(f"invalid params for {name}: ")
        assert first["field"] is None or first["field"] in refused.message
        checked += 1
    assert checked > 1000


async def test_a_refused_value_is_told_as_what_the_field_must_be_over_rest(hub: HubClient, alice: Agent) -> None:
    auth = {"authorization": f"Bearer {alice.access_token}"}
    too_many = await hub.http.get("/api/agents", params={"limit": "500"}, headers=auth)
    assert too_many.status_code == 400
    assert too_many.json()["error"] == {
        "code": "invalid_request",
        "message": "invalid params for agents.search: limit must be at most 200",
        "details": {"errors": [{"field": "limit", "message": "must be at most 200", "type": "less_than_equal"}]},
    }
    unknown = await hub.http.patch("/api/agents/me", json={"colour": "blue"}, headers=auth)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == "invalid params for agents.update_profile: unknown field 'colour'"
    assert unknown.json()["error"]["details"]["errors"] == [
        {"field": "colour", "message": "unknown field", "type": "extra_forbidden"}]


@pytest.mark.parametrize(("path", "field", "value", "written"), [
    ("/api/usage", "to_day", "0", "2026-01-02"),
    ("/api/executions", "since", "0.5", "2026-01-02T03:04:05Z"),
    ("/api/executions/stats", "until", "1e3", "2126-01-02T03:04:05+01:00"),
])
async def test_a_day_or_a_moment_must_be_written_out_not_a_number(
    hub: HubClient, alice: Agent, path: str, field: str, value: str, written: str
) -> None:
    # pydantic alone took "0" for 1970-01-01 (schemathesis found it): the document says ISO 8601.
    auth = {"authorization": f"Bearer {alice.access_token}"}
    refused = await hub.http.get(path, params={field: value}, headers=auth)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"]["errors"][0]["field"] == field
    accepted = await hub.http.get(path, params={field: written}, headers=auth)
    assert accepted.status_code == 200, accepted.text


async def test_a_models_own_rule_keeps_its_words_and_names_its_field_over_json_rpc(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    with pytest.raises(RpcError) as both:
        await hub.call("messages.send", {"conversation_id": conversation_id, "to": bob.handle, "body": "hi"},
                       token=alice.access_token)
    assert both.value.error["message"] == "invalid params for messages.send: give exactly one of conversation_id and to"
    assert both.value.details["errors"] == [
        {"field": None, "message": "give exactly one of conversation_id and to", "type": "value_error"}]
    with pytest.raises(RpcError) as blank:
        await hub.call("messages.send", {"conversation_id": conversation_id, "body": " \n"}, token=alice.access_token)
    assert blank.value.error["message"] == "invalid params for messages.send: the body is empty"
    assert blank.value.details["errors"] == [{"field": "body", "message": "the body is empty", "type": "value_error"}]
    with pytest.raises(RpcError) as missing:
        await hub.call("messages.send", {"conversation_id": conversation_id}, token=alice.access_token)
    assert missing.value.error["message"] == "invalid params for messages.send: body is required"


def test_every_integer_a_caller_sends_has_a_maximum() -> None:
    """An unbounded integer reaches the database, which refuses what its column cannot hold with a server
    error (PostgreSQL: "integer out of range"); a bound makes it a 400 that names the field."""

    def unbounded(schema: Any, where: str) -> list[str]:
        """Every integer without a maximum in the schema's tree, its definitions (`$defs`) included."""
        if isinstance(schema, list):
            return [found for item in schema for found in unbounded(item, where)]
        if not isinstance(schema, dict):
            return []
        found = [where] if schema.get("type") == "integer" and "maximum" not in schema else []
        return found + [item for key, value in schema.items() for item in unbounded(value, f"{where}.{key}")]

    missing = [found for name, op in sorted(OPERATIONS.items())
               for found in unbounded(op.params.model_json_schema(), name)]
    assert not missing
