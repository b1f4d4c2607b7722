"""PARLEY_TRUSTED_PROXIES: behind a trusted load balancer, X-Forwarded-For names the client whose
per-address rate limits apply; from anyone else the header changes nothing."""

from ipaddress import ip_network

import httpx
import pytest

from bridges.client._websocket import WebSocketConnection
from bridges.forwarded import client_address
from hub.config import ConfigError, Settings

from .client import AddressedHubClient, HubClient, RpcError, RpcSocket, unique_handle
from .conftest import ServerFactory

AUTH_LIMIT = "2:0.001"  # two anonymous auth calls per address, then hardly any refill


async def register(client: HubClient, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for is not None else {}
    return await client.http.post("/api/auth/register", json={"handle": unique_handle("xff")}, headers=headers)


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"


async def test_a_trusted_proxy_gives_each_forwarded_client_its_own_bucket(start_hub: ServerFactory) -> None:
    server = start_hub(trusted_proxies="127.0.0.1,10.0.0.0/8", rate_auth=AUTH_LIMIT)
    async with HubClient(server) as proxy:
        assert [(await register(proxy, "203.0.113.1")).status_code for _ in range(2)] == [201, 201]
        assert_limited(await register(proxy, "203.0.113.1"))
        # the client cannot escape by writing entries of its own: the proxy appends the real one last
        assert_limited(await register(proxy, "198.51.100.7, 203.0.113.1"))
        # another client behind the same proxy has a bucket of its own...
        assert (await register(proxy, "203.0.113.2")).status_code == 201
        # ...and is the same client through a second trusted proxy (10.1.2.3) too
        assert (await register(proxy, "203.0.113.2, 10.1.2.3")).status_code == 201
        assert_limited(await register(proxy, "203.0.113.2"))
        # IPv6, written two ways, is one address
        assert (await register(proxy, "2001:db8::1")).status_code == 201
        assert (await register(proxy, "2001:0db8:0:0::1")).status_code == 201
        assert_limited(await register(proxy, "2001:db8::1"))

        # no header, or an entry that is no address: the socket's address (127.0.0.1), not a forwarded one
        assert (await register(proxy)).status_code == 201
        assert (await register(proxy, "203.0.113.3, not-an-address")).status_code == 201
        assert_limited(await register(proxy))
        assert (await register(proxy, "203.0.113.3")).status_code == 201

    # a peer that is not a trusted proxy: its header is never read, and charges nobody it names
    async with AddressedHubClient(server, "127.0.0.2") as stranger, HubClient(server) as proxy:
        assert (await register(stranger, "203.0.113.4")).status_code == 201
        assert (await register(stranger, "203.0.113.5")).status_code == 201
        assert_limited(await register(stranger, "203.0.113.6"))
        assert (await register(proxy, "203.0.113.4")).status_code == 201


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(start_hub: ServerFactory) -> None:
    server = start_hub(rate_auth=AUTH_LIMIT)
    async with HubClient(server) as client:
        assert (await register(client, "203.0.113.1")).status_code == 201
        assert (await register(client, "203.0.113.2")).status_code == 201
        # a new header every time is still the one socket address's bucket
        assert_limited(await register(client, "203.0.113.3"))
        assert_limited(await register(client))


async def test_a_websocket_through_a_trusted_proxy_has_the_forwarded_address(start_hub: ServerFactory) -> None:
    server = start_hub(trusted_proxies="127.0.0.1", rate_auth=AUTH_LIMIT)

    async def open_socket(forwarded_for: str) -> RpcSocket:
        return RpcSocket(await WebSocketConnection.connect(server.ws_url, {"x-forwarded-for": forwarded_for}))

    async with await open_socket("203.0.113.1") as first:
        await first.call("auth.register", {"handle": unique_handle("xff-ws")})
        await first.call("auth.register", {"handle": unique_handle("xff-ws")})
        with pytest.raises(RpcError) as refused:
            await first.call("auth.register", {"handle": unique_handle("xff-ws")})
        assert refused.value.code == "rate_limited"
    async with await open_socket("203.0.113.2") as second:
        assert (await second.call("auth.register", {"handle": unique_handle("xff-ws")}))["agent_id"]
    async with HubClient(server) as proxy:  # one address, over HTTP as over the WebSocket
        assert_limited(await register(proxy, "203.0.113.1"))
        assert (await register(proxy)).status_code == 201


TRUSTED = (ip_network("10.0.0.0/8"), ip_network("192.0.2.7"), ip_network("2001:db8:ffff::/48"))


@pytest.mark.parametrize("peer,forwarded_for,client", [
    ("10.0.0.1", "203.0.113.5", "203.0.113.5"),
    ("10.0.0.1", "198.51.100.1, 203.0.113.5", "203.0.113.5"),  # a spoofed left entry is ignored
    ("10.0.0.1", "203.0.113.5 ,10.2.2.2,192.0.2.7", "203.0.113.5"),  # past the trusted proxies
    ("10.0.0.1", "10.9.9.9, 192.0.2.7", "10.9.9.9"),  # every entry trusted: the leftmost
    ("10.0.0.1", "203.0.113.5, garbage", "10.0.0.1"),  # malformed where the walk reaches it
    ("10.0.0.1", "garbage, 203.0.113.5", "203.0.113.5"),  # ...and ignored left of the client
    ("10.0.0.1", "203.0.113.5:4711", "10.0.0.1"),
    ("10.0.0.1", "", "10.0.0.1"),
    ("10.0.0.1", None, "10.0.0.1"),
    ("127.0.0.1", "203.0.113.5", "127.0.0.1"),  # an untrusted peer's header is never read
    ("192.0.2.8", "203.0.113.5", "192.0.2.8"),
    ("unknown", "203.0.113.5", "unknown"),
    ("::ffff:10.0.0.1", "2001:DB8::5", "2001:db8::5"),  # IPv4-mapped peer; IPv6 written canonically
    ("2001:db8:ffff::1", "::ffff:203.0.113.5", "203.0.113.5"),
])
def test_the_client_is_the_first_untrusted_entry_from_the_right(peer: str, forwarded_for: str | None,
                                                                  client: str) -> None:
    assert client_address(peer, forwarded_for, TRUSTED) == client


def test_no_trusted_proxies_trusts_nobody() -> None:
    assert client_address("10.0.0.1", "203.0.113.5", ()) == "10.0.0.1"


@pytest.mark.parametrize("value", ["10.0.0.1/8", "example.com", "1.2.3.4:80", "10.0.0.0/33"])
def test_a_bad_trusted_proxies_setting_fails_at_start_with_the_entry_named(value: str) -> None:
    with pytest.raises(ConfigError, match="PARLEY_TRUSTED_PROXIES") as refused:
        Settings.from_env({"PARLEY_TRUSTED_PROXIES": f"127.0.0.1, {value}"})
    assert value in str(refused.value)
    assert Settings.from_env({"PARLEY_TRUSTED_PROXIES": " 127.0.0.1, 10.0.0.0/8 ,"}).trusted_proxies == (
        ip_network("127.0.0.1"), ip_network("10.0.0.0/8"))
