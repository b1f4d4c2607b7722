"""Identity, black-box over real sockets: registration, token exchange, refresh rotation, recovery,
logout, whoami, and access tokens that were tampered with."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hub.secrets import API_KEY_KIND, REFRESH_KIND, issue, new_recovery_key

from .client import AGENT_SCOPES, AddressedHubClient, Agent, HubClient, error_of, unique_handle
from .conftest import ServerFactory, diagonal
from .servers import HubServer


def _flip(text: str, index: int) -> str:
    """`text` with the character at `index` replaced by a different one of the same alphabet."""
    replacement = "B" if text[index] == "A" else "A"
    return text[:index] + replacement + text[index + 1:]


async def _whoami(hub: HubClient, token: str) -> dict[str, Any]:
    result: dict[str, Any] = await hub.call("auth.whoami", token=token)
    return result


async def _session(hub: HubClient, api_key: str) -> dict[str, Any]:
    grant: dict[str, Any] = await hub.call("auth.token", {"api_key": api_key})
    return grant


# -- auth.register --------------------------------------------------------------------------------


async def test_register_returns_the_agent_a_recovery_key_and_a_working_token_grant(hub: HubClient) -> None:
    handle = unique_handle("reg")
    result = await hub.call("auth.register", {"handle": handle, "display_name": "Reg", "description": "about"})

    assert set(result) == {"agent_id", "handle", "recovery_key", "tokens"}
    assert result["agent_id"].startswith("agt_")
    assert result["handle"] == handle
    assert result["recovery_key"].startswith("prk_")
    tokens = result["tokens"]
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 15 * 60
    assert tokens["refresh_token"].startswith("prt_")
    assert tokens["refresh_expires_in"] > tokens["expires_in"]
    assert tokens["scopes"] == AGENT_SCOPES
    me = await _whoami(hub, tokens["access_token"])
    assert me["agent"]["agent_id"] == result["agent_id"]
    assert me["agent"]["display_name"] == "Reg"
    assert me["agent"]["description"] == "about"
    assert me["agent"]["visibility"] == "public"
    assert me["agent"]["tags"] == [] and me["agent"]["metadata"] == {}
    assert me["is_admin"] is False


async def test_register_normalizes_the_handle_to_lower_case(hub: HubClient) -> None:
    handle = unique_handle("mixed")
    result = await hub.call("auth.register", {"handle": "  " + handle.upper() + " "})

    assert result["handle"] == handle
    assert (await _whoami(hub, result["tokens"]["access_token"]))["agent"]["handle"] == handle
    error = await error_of(hub.call("auth.register", {"handle": handle}))
    assert error.code == "conflict"


async def test_register_with_a_taken_handle_is_a_conflict_and_the_first_agent_keeps_it(hub: HubClient) -> None:
    first = await hub.register("taken")

    error = await error_of(hub.call("auth.register", {"handle": first.handle, "display_name": "Impostor"}))

    assert error.code == "conflict"
    assert error.details.get("field") == "handle"
    profile = await hub.call("agents.get", {"agent": first.handle}, token=first.access_token)
    assert profile["agent_id"] == first.agent_id
    assert profile["display_name"] is None


@pytest.mark.parametrize(
    "bad_handle",
    ["ab", "a" * 33, "has space", "dots.not.ok", "émile", "semi;colon", "", 12345, None],
    ids=["too-short", "too-long", "space", "dot", "non-ascii", "semicolon", "empty", "number", "null"],
)
async def test_register_refuses_a_malformed_handle_with_field_details(hub: HubClient, bad_handle: object) -> None:
    error = await error_of(hub.call("auth.register", {"handle": bad_handle}))

    assert error.code == "invalid_request"
    assert error.jsonrpc_code == -32602
    assert "handle" in [item["field"] for item in error.details["errors"]]


async def test_register_accepts_handles_of_3_and_32_characters(hub: HubClient) -> None:
    short = "z" + uuid.uuid4().hex[:2]
    long = ("h-" + uuid.uuid4().hex)[:32]

    assert (await hub.call("auth.register", {"handle": short}))["handle"] == short
    assert (await hub.call("auth.register", {"handle": long}))["handle"] == long


async def test_register_without_a_handle_or_with_unknown_fields_is_invalid(hub: HubClient) -> None:
    missing = await error_of(hub.call("auth.register", {}))
    unknown = await error_of(hub.call("auth.register", {"handle": unique_handle("x"), "is_admin": True}))

    assert missing.code == "invalid_request"
    assert [item["field"] for item in missing.details["errors"]] == ["handle"]
    assert unknown.code == "invalid_request"
    assert [item["field"] for item in unknown.details["errors"]] == ["is_admin"]


async def test_a_registration_refused_for_invalid_params_writes_nothing(hub: HubClient, alice: Agent) -> None:
    handle = unique_handle("nowrite")

    error = await error_of(hub.call("auth.register", {"handle": handle, "display_name": "x" * 65}))

    assert error.code == "invalid_request"
    assert [item["field"] for item in error.details["errors"]] == ["display_name"]
    lookup = await error_of(hub.call("agents.get", {"agent": handle}, token=alice.access_token))
    assert lookup.code == "not_found"
    assert (await hub.call("auth.register", {"handle": handle}))["handle"] == handle


# -- auth.token -----------------------------------------------------------------------------------


async def test_auth_token_exchanges_an_api_key_for_a_grant_with_the_keys_scopes(hub: HubClient, alice: Agent) -> None:
    created = await hub.call(
        "keys.create", {"name": "narrow", "scopes": ["messages:read", "agents:read"]}, token=alice.access_token
    )

    grant = await _session(hub, created["api_key"])

    assert grant["token_type"] == "Bearer"
    assert grant["scopes"] == ["agents:read", "messages:read"]
    assert grant["refresh_token"].startswith("prt_")
    me = await _whoami(hub, grant["access_token"])
    assert me["agent"]["agent_id"] == alice.agent_id
    assert me["credential"] == {
        "kind": "access_token",
        "scopes": ["agents:read", "messages:read"],
        "key_id": created["key"]["key_id"],
        "expires_at": me["credential"]["expires_at"],
    }


async def test_auth_token_refuses_unknown_mistyped_forged_and_revoked_api_keys(hub: HubClient, alice: Agent) -> None:
    created = await hub.call("keys.create", {"name": "victim"}, token=alice.access_token)
    api_key, key_id = created["api_key"], created["key"]["key_id"]
    forged, _ = issue(API_KEY_KIND, key_id)  # the right id and a valid checksum, but not the secret
    mistyped = _flip(api_key, len(api_key) - 20)

    for bad in ["prl_nothing_here", mistyped, forged, api_key[:-1], api_key + "x", alice.refresh_token]:
        error = await error_of(hub.call("auth.token", {"api_key": bad}))
        assert error.code == "unauthorized", bad
    assert (await _session(hub, api_key))["access_token"]

    await hub.call("keys.revoke", {"key_id": key_id}, token=alice.access_token)

    assert (await error_of(hub.call("auth.token", {"api_key": api_key}))).code == "unauthorized"


async def test_a_refused_bearer_credential_is_http_401_with_the_error_envelope(hub: HubClient) -> None:
    response = await hub.post_rpc({"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"}, token="prl_bogus_key")

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["data"]["code"] == "unauthorized"


# -- auth.refresh ---------------------------------------------------------------------------------


async def test_refresh_rotates_to_a_new_working_pair_each_time(hub: HubClient, alice: Agent) -> None:
    second = await hub.call("auth.refresh", {"refresh_token": alice.refresh_token})
    third = await hub.call("auth.refresh", {"refresh_token": second["refresh_token"]})

    assert len({alice.refresh_token, second["refresh_token"], third["refresh_token"]}) == 3
    assert second["scopes"] == third["scopes"] == AGENT_SCOPES
    for grant in (second, third):
        assert (await _whoami(hub, grant["access_token"]))["agent"]["agent_id"] == alice.agent_id


async def test_replaying_a_used_refresh_token_ends_its_whole_session_family(hub: HubClient, alice: Agent) -> None:
    other = await _session(hub, await hub.api_key(alice))  # a second, unrelated session
    newest = await hub.call("auth.refresh", {"refresh_token": alice.refresh_token})

    replay = await error_of(hub.call("auth.refresh", {"refresh_token": alice.refresh_token}))

    assert replay.code == "unauthorized"
    for token in (newest["access_token"], alice.access_token):
        assert (await error_of(_whoami(hub, token))).code == "unauthorized"
    ended = await error_of(hub.call("auth.refresh", {"refresh_token": newest["refresh_token"]}))
    assert ended.code == "unauthorized"
    assert (await _whoami(hub, other["access_token"]))["agent"]["agent_id"] == alice.agent_id
    assert (await hub.call("auth.refresh", {"refresh_token": other["refresh_token"]}))["access_token"]


async def test_refresh_refuses_malformed_mistyped_forged_and_foreign_credentials(hub: HubClient, alice: Agent) -> None:
    token_id = "rft_" + alice.refresh_token.split("_")[1]
    forged, _ = issue(REFRESH_KIND, token_id)
    api_key = await hub.api_key(alice)

    for bad in ["prt_nope", _flip(alice.refresh_token, len(alice.refresh_token) - 20), forged,
                alice.refresh_token + "x", api_key, alice.recovery_key]:
        error = await error_of(hub.call("auth.refresh", {"refresh_token": bad}))
        assert error.code == "unauthorized", bad
    # none of those attempts touched the real token
    assert (await hub.call("auth.refresh", {"refresh_token": alice.refresh_token}))["access_token"]


# -- auth.recover ---------------------------------------------------------------------------------


async def test_recover_with_a_wrong_key_or_unknown_agent_is_unauthorized_and_changes_nothing(
    hub: HubClient, alice: Agent
) -> None:
    attempts = [
        {"agent": alice.handle, "recovery_key": new_recovery_key()},
        {"agent": alice.agent_id, "recovery_key": _flip(alice.recovery_key, len(alice.recovery_key) - 1)},
        {"agent": alice.handle, "recovery_key": "not-even-a-recovery-key"},
        {"agent": unique_handle("ghost"), "recovery_key": alice.recovery_key},
    ]
    for params in attempts:
        assert (await error_of(hub.call("auth.recover", params))).code == "unauthorized", params

    assert (await _whoami(hub, alice.access_token))["agent"]["agent_id"] == alice.agent_id
    assert (await hub.call("auth.refresh", {"refresh_token": alice.refresh_token}))["access_token"]


async def test_recover_replaces_every_credential_and_rotates_the_recovery_key(hub: HubClient, alice: Agent) -> None:
    old_key = await hub.api_key(alice)
    old_session = await _session(hub, old_key)

    recovered = await hub.call("auth.recover", {"agent": alice.handle, "recovery_key": alice.recovery_key})

    assert recovered["agent_id"] == alice.agent_id
    assert recovered["recovery_key"].startswith("prk_") and recovered["recovery_key"] != alice.recovery_key
    assert recovered["api_key"]["api_key"].startswith("prl_")
    assert recovered["api_key"]["key"]["scopes"] == AGENT_SCOPES
    assert recovered["tokens"]["scopes"] == AGENT_SCOPES
    # every old credential is refused
    for token in (alice.access_token, old_session["access_token"], old_key):
        assert (await error_of(_whoami(hub, token))).code == "unauthorized"
    for refresh_token in (alice.refresh_token, old_session["refresh_token"]):
        assert (await error_of(hub.call("auth.refresh", {"refresh_token": refresh_token}))).code == "unauthorized"
    assert (await error_of(hub.call("auth.token", {"api_key": old_key}))).code == "unauthorized"
    reused = await error_of(hub.call("auth.recover", {"agent": alice.handle, "recovery_key": alice.recovery_key}))
    assert reused.code == "unauthorized"
    # the new ones work
    new_token = recovered["tokens"]["access_token"]
    assert (await _whoami(hub, new_token))["agent"]["agent_id"] == alice.agent_id
    assert (await _whoami(hub, recovered["api_key"]["api_key"]))["credential"]["kind"] == "api_key"
    assert (await hub.call("auth.refresh", {"refresh_token": recovered["tokens"]["refresh_token"]}))["access_token"]
    keys = (await hub.call("keys.list", token=new_token))["items"]
    assert {key["key_id"]: key["revoked_at"] is not None for key in keys} == {
        key["key_id"]: key["key_id"] != recovered["api_key"]["key"]["key_id"] for key in keys
    }
    again = await hub.call("auth.recover", {"agent": alice.agent_id, "recovery_key": recovered["recovery_key"]})
    assert again["agent_id"] == alice.agent_id


@diagonal  # its own hub, for a rule neither the loop nor the store decides
async def test_recovery_is_rate_limited_per_client_address_and_per_target_agent(start_hub: ServerFactory) -> None:
    server: HubServer = start_hub(rate_recovery="3:0.001")
    async with HubClient(server) as first, AddressedHubClient(server, "127.0.0.2") as second, \
            AddressedHubClient(server, "127.0.0.3") as third:
        target = await first.register("target")
        bystander = await first.register("bystander")
        for _ in range(3):
            guess = {"agent": target.handle, "recovery_key": new_recovery_key()}
            wrong = await error_of(first.call("auth.recover", guess))
            assert wrong.code == "unauthorized"

        right = {"agent": target.handle, "recovery_key": target.recovery_key}
        limited = await error_of(first.call("auth.recover", right))
        assert limited.code == "rate_limited"
        assert limited.jsonrpc_code == -32029
        assert limited.details["retry_after"] > 0
        assert limited.details["limit"] == 3
        # per address: this address may not try any other agent either
        elsewhere = await error_of(first.call("auth.recover", {"agent": bystander.handle,
                                                               "recovery_key": bystander.recovery_key}))
        assert elsewhere.code == "rate_limited"

        # per agent: another address may not keep guessing the same agent, named by handle or by id
        for client, ref in ((second, target.handle), (third, target.agent_id)):
            same_target = await error_of(client.call("auth.recover", {**right, "agent": ref}))
            assert same_target.code == "rate_limited", ref
            assert same_target.details["retry_after"] > 0
        # ...but it may still recover an agent nobody has been guessing at
        ok = await second.call("auth.recover", {"agent": bystander.handle, "recovery_key": bystander.recovery_key})
        assert ok["agent_id"] == bystander.agent_id
        assert (await _whoami(first, target.access_token))["agent"]["agent_id"] == target.agent_id



@diagonal
async def test_credentials_ended_before_a_restart_stay_ended_after_it(start_hub: ServerFactory) -> None:
    """The hub remembers ended sessions in memory for the speed of every check; a restart reloads them."""
    server = start_hub()
    async with HubClient(server) as hub:
        alice, bob = await hub.register("alice"), await hub.register("bob")
        logged_out = await _session(hub, await hub.api_key(alice))
        await hub.call("auth.logout", {}, token=logged_out["access_token"])
        revoked_key = await hub.call("keys.create", {"name": "doomed"}, token=alice.access_token)
        of_revoked_key = await _session(hub, revoked_key["api_key"])
        await _whoami(hub, revoked_key["api_key"])  # in use, so the hub holds it until the revocation
        await hub.call("keys.revoke", {"key_id": revoked_key["key"]["key_id"]}, token=alice.access_token)
        replayed = await _session(hub, await hub.api_key(alice))
        rotated = await hub.call("auth.refresh", {"refresh_token": replayed["refresh_token"]})
        await error_of(hub.call("auth.refresh", {"refresh_token": replayed["refresh_token"]}))  # reuse ends it
        bob_key = await hub.api_key(bob)
        await _whoami(hub, bob_key)
        await hub.call("auth.recover", {"agent": bob.handle, "recovery_key": bob.recovery_key})
        ended = {
            "a logged-out session's token": logged_out["access_token"],
            "a revoked key": revoked_key["api_key"],
            "a token of a revoked key": of_revoked_key["access_token"],
            "a token of a replayed refresh family": rotated["access_token"],
            "a key from before recovery": bob_key,
            "a token from before recovery": bob.access_token,
        }
        still_good = await hub.api_key(alice)

    await anyio.to_thread.run_sync(server.stop)
    await anyio.to_thread.run_sync(server.launch)
    async with HubClient(server) as hub:
        for name, credential in ended.items():
            assert (await error_of(_whoami(hub, credential))).code == "unauthorized", name
        for refresh_token in (logged_out["refresh_token"], rotated["refresh_token"]):
            assert (await error_of(hub.call("auth.refresh", {"refresh_token": refresh_token}))).code == "unauthorized"
        assert (await _whoami(hub, still_good))["agent"]["agent_id"] == alice.agent_id

# -- auth.logout ----------------------------------------------------------------------------------


async def test_logout_ends_the_callers_own_session_at_once(hub: HubClient, alice: Agent) -> None:
    api_key = await hub.api_key(alice)
    other = await _session(hub, api_key)

    result = await hub.call("auth.logout", {}, token=alice.access_token)

    assert result == {"sessions_ended": 1}
    assert (await error_of(_whoami(hub, alice.access_token))).code == "unauthorized"
    assert (await error_of(hub.call("auth.refresh", {"refresh_token": alice.refresh_token}))).code == "unauthorized"
    assert (await _whoami(hub, other["access_token"]))["agent"]["agent_id"] == alice.agent_id
    assert (await _whoami(hub, api_key))["agent"]["agent_id"] == alice.agent_id


async def test_logout_with_a_refresh_token_ends_that_session_and_not_the_callers(hub: HubClient, alice: Agent) -> None:
    other = await _session(hub, await hub.api_key(alice))
    rotated = await hub.call("auth.refresh", {"refresh_token": other["refresh_token"]})

    result = await hub.call("auth.logout", {"refresh_token": rotated["refresh_token"]}, token=alice.access_token)

    assert result == {"sessions_ended": 1}
    for token in (other["access_token"], rotated["access_token"]):
        assert (await error_of(_whoami(hub, token))).code == "unauthorized"
    ended = await error_of(hub.call("auth.refresh", {"refresh_token": rotated["refresh_token"]}))
    assert ended.code == "unauthorized"
    assert (await _whoami(hub, alice.access_token))["agent"]["agent_id"] == alice.agent_id


async def test_logout_with_another_agents_refresh_token_is_unauthorized_and_ends_nothing(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    error = await error_of(hub.call("auth.logout", {"refresh_token": bob.refresh_token}, token=alice.access_token))

    assert error.code == "unauthorized"
    assert (await _whoami(hub, bob.access_token))["agent"]["agent_id"] == bob.agent_id
    assert (await _whoami(hub, alice.access_token))["agent"]["agent_id"] == alice.agent_id
    assert (await hub.call("auth.refresh", {"refresh_token": bob.refresh_token}))["access_token"]


async def test_logout_everywhere_ends_every_session_but_api_keys_keep_working(hub: HubClient, alice: Agent) -> None:
    api_key = await hub.api_key(alice)
    other = await _session(hub, api_key)

    result = await hub.call("auth.logout", {"everywhere": True}, token=alice.access_token)

    assert result == {"sessions_ended": 2}
    for token in (alice.access_token, other["access_token"]):
        assert (await error_of(_whoami(hub, token))).code == "unauthorized"
    for refresh_token in (alice.refresh_token, other["refresh_token"]):
        assert (await error_of(hub.call("auth.refresh", {"refresh_token": refresh_token}))).code == "unauthorized"
    assert (await _whoami(hub, api_key))["agent"]["agent_id"] == alice.agent_id
    fresh = await _session(hub, api_key)
    assert (await _whoami(hub, fresh["access_token"]))["agent"]["agent_id"] == alice.agent_id


async def test_logout_needs_a_credential(hub: HubClient) -> None:
    assert (await error_of(hub.call("auth.logout", {}))).code == "unauthorized"


# -- auth.whoami ----------------------------------------------------------------------------------


async def test_whoami_over_an_access_token_describes_the_agent_and_the_token(hub: HubClient, alice: Agent) -> None:
    before = datetime.now(UTC)

    me = await _whoami(hub, alice.access_token)

    assert me["agent"]["agent_id"] == alice.agent_id
    assert me["agent"]["handle"] == alice.handle
    assert me["is_admin"] is False
    credential = me["credential"]
    assert credential["kind"] == "access_token"
    assert credential["scopes"] == AGENT_SCOPES
    assert credential["key_id"] is None
    expires_at = datetime.fromisoformat(credential["expires_at"])
    assert before + timedelta(minutes=14) < expires_at < before + timedelta(minutes=16)


async def test_whoami_over_an_api_key_used_directly_as_bearer(hub: HubClient, alice: Agent) -> None:
    created = await hub.call("keys.create", {"name": "direct", "scopes": ["agents:read", "keys:manage"]},
                             token=alice.access_token)

    me = await _whoami(hub, created["api_key"])

    assert me["agent"]["agent_id"] == alice.agent_id
    assert me["credential"] == {"kind": "api_key", "scopes": ["agents:read", "keys:manage"],
                                "key_id": created["key"]["key_id"], "expires_at": None}


async def test_an_api_key_also_works_in_the_x_api_key_header(hub: HubClient, alice: Agent) -> None:
    api_key = await hub.api_key(alice)

    response = await hub.http.post("/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"},
                                   headers={"x-api-key": api_key})

    assert response.json()["result"]["agent"]["agent_id"] == alice.agent_id


async def test_whoami_without_a_credential_is_unauthorized(hub: HubClient) -> None:
    assert (await error_of(hub.call("auth.whoami"))).code == "unauthorized"


# -- tampered access tokens -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _server_signing_key(server: HubServer) -> tuple[str, Ed25519PrivateKey]:
    """The hub's current signing key, read from its secrets file (see hub/secrets.py ServerKeys)."""
    document = json.loads((server.data_dir / "server-keys.json").read_text())
    entry = document["signing_keys"][0]
    return entry["kid"], Ed25519PrivateKey.from_private_bytes(base64.b64decode(entry["ed25519"]))


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _sign(claims: dict[str, Any], key: Ed25519PrivateKey, kid: str) -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


Tamper = Callable[[str, HubServer], str]


def _flip_signature(token: str, server: HubServer) -> str:
    head, payload, signature = token.split(".")
    return f"{head}.{payload}.{_flip(signature, 10)}"


def _change_payload(token: str, server: HubServer) -> str:
    head, _, signature = token.split(".")
    claims = {**_claims(token), "sub": server.admin["agent_id"], "scp": " ".join(AGENT_SCOPES + ["admin"])}
    return f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"


def _other_key_same_kid(token: str, server: HubServer) -> str:
    kid, _ = _server_signing_key(server)
    return _sign(_claims(token), Ed25519PrivateKey.generate(), kid)


def _alg_none(token: str, server: HubServer) -> str:
    kid, _ = _server_signing_key(server)
    return _unsigned({"alg": "none", "typ": "JWT", "kid": kid}, _claims(token))


def _hs256_with_the_public_key(token: str, server: HubServer) -> str:
    kid, key = _server_signing_key(server)
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    unsigned = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, _claims(token)).rsplit(".", 1)[0]
    return f"{unsigned}.{_b64(hmac.new(public, unsigned.encode(), hashlib.sha256).digest())}"


def _unknown_kid(token: str, server: HubServer) -> str:
    _, key = _server_signing_key(server)
    return _sign(_claims(token), key, "0123456789abcdef")


def _resigned(**changes: Any) -> Tamper:
    """The token's claims with `changes` (None drops a claim), signed with the hub's real key."""

    def tamper(token: str, server: HubServer) -> str:
        kid, key = _server_signing_key(server)
        claims = {**_claims(token), **changes}
        return _sign({name: value for name, value in claims.items() if value is not None}, key, kid)

    return tamper


TAMPERS: dict[str, Tamper] = {
    "signature-char-flipped": _flip_signature,
    "payload-changed": _change_payload,
    "other-key-same-kid": _other_key_same_kid,
    "alg-none": _alg_none,
    "hs256-with-public-key": _hs256_with_the_public_key,
    "unknown-kid": _unknown_kid,
    "expired": _resigned(iat=int(time.time()) - 3600, exp=int(time.time()) - 1800),
    "wrong-audience": _resigned(aud="someone-else"),
    "wrong-issuer": _resigned(iss="someone-else"),
    "stale-epoch": _resigned(ep=1),
    "unknown-scope": _resigned(scp="agents:read root"),
    "no-session-claim": _resigned(sid=None),
    "not-a-jwt": lambda token, server: "abc.def.ghi",
    "truncated": lambda token, server: token[: len(token) // 2],
}


async def test_a_token_resigned_with_the_hubs_own_key_is_accepted(hub: HubClient, alice: Agent) -> None:
    """The control for the tampering tests below: the forging helpers mint tokens the hub accepts."""
    token = _resigned(exp=int(time.time()) + 600)(alice.access_token, hub.server)

    assert (await _whoami(hub, token))["agent"]["agent_id"] == alice.agent_id


@pytest.mark.parametrize("tamper", list(TAMPERS.values()), ids=list(TAMPERS))
async def test_a_tampered_or_expired_access_token_is_unauthorized(hub: HubClient, alice: Agent, tamper: Tamper) -> None:
    forged = tamper(alice.access_token, hub.server)
    assert forged != alice.access_token

    error = await error_of(_whoami(hub, forged))

    assert error.code == "unauthorized"
    assert (await _whoami(hub, alice.access_token))["agent"]["agent_id"] == alice.agent_id


async def test_a_validly_signed_token_claiming_admin_gives_a_normal_agent_no_admin_rights(
    hub: HubClient, alice: Agent
) -> None:
    token = _resigned(scp=" ".join(AGENT_SCOPES + ["admin"]))(alice.access_token, hub.server)

    me = await _whoami(hub, token)

    assert me["is_admin"] is False
    assert "admin" not in me["credential"]["scopes"]
    error = await error_of(hub.call("admin.agents.list", {}, token=token))
    assert error.code == "forbidden"

