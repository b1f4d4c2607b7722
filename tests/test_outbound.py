"""Outbound requests (hub/outbound.py) against a real local HTTP(S) server.

The server runs in threads, as `tcp_proxy.py` does: it answers while the test awaits on either
backend, and a handler may block (a slow server) without blocking the client under test. Each
answer closes its connection, so every request the client makes is one accepted connection.
"""

import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import Self

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.config import ConfigError, Settings
from hub.outbound import (
    OutboundClient,
    OutboundFailed,
    OutboundRefused,
    OutboundTimeout,
    OutboundTooLarge,
    OutboundTooManyRedirects,
    Refusal,
    refusal_of,
)
from hub.workflows.steps import StepError, fetch_with

pytestmark = pytest.mark.anyio

LOCAL = ["127.0.0.1/32"]


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Received, socket.socket], None]


def respond(conn: socket.socket, status: int = 200, headers: tuple[tuple[str, str], ...] = (),
            body: bytes = b"") -> None:
    lines = [f"HTTP/1.1 {status} Status", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def _read_request(conn: socket.socket) -> Received | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", "0")):
        body += conn.recv(65536)
    return Received(method, target, headers, body)


@dataclass
class LocalServer:
    """HTTP/1.1 (or HTTPS with `tls`) on 127.0.0.1, one request per connection."""

    handler: Handler
    tls: ssl.SSLContext | None = None
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    sni: list[str | None] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    handled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        if self.tls is not None:
            self.tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> Self:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # closing a socket does not wake a thread blocked in accept()
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener closed
            self.connections += 1
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = _read_request(conn)
            if request is not None:
                self.requests.append(request)
                self.handler(request, conn)
        except OSError:  # ssl.SSLError included: the client refused the certificate, or hung up
            pass
        finally:
            conn.close()
            self.handled.set()


def ok(request: Received, conn: socket.socket) -> None:
    respond(conn, 200, (("X-Reply", "yes"), ("X-Method", request.method)), b"hello " + request.body)


# -- what is refused, and the message that says why ------------------------------------------------

@pytest.mark.parametrize(("address", "refusal"), [
    ("127.0.0.1", Refusal.LOOPBACK), ("127.8.9.10", Refusal.LOOPBACK), ("::1", Refusal.LOOPBACK),
    ("10.0.0.1", Refusal.PRIVATE), ("172.16.0.1", Refusal.PRIVATE), ("192.168.1.1", Refusal.PRIVATE),
    ("fc00::1", Refusal.PRIVATE), ("fd12:3456::1", Refusal.PRIVATE),
    ("169.254.1.1", Refusal.LINK_LOCAL), ("fe80::1", Refusal.LINK_LOCAL),
    ("169.254.169.254", Refusal.METADATA), ("fd00:ec2::254", Refusal.METADATA),
    ("100.100.100.200", Refusal.METADATA), ("100.64.0.1", Refusal.SHARED), ("100.127.255.254", Refusal.SHARED),
    ("224.0.0.1", Refusal.MULTICAST), ("239.255.255.250", Refusal.MULTICAST), ("ff02::1", Refusal.MULTICAST),
    ("0.0.0.0", Refusal.UNSPECIFIED), ("::", Refusal.UNSPECIFIED), ("0.1.2.3", Refusal.RESERVED),
    ("192.0.0.8", Refusal.RESERVED), ("192.0.2.1", Refusal.RESERVED), ("198.18.0.1", Refusal.RESERVED),
    ("198.51.100.1", Refusal.RESERVED), ("203.0.113.1", Refusal.RESERVED), ("240.0.0.1", Refusal.RESERVED),
    ("255.255.255.255", Refusal.RESERVED), ("2001:db8::1", Refusal.RESERVED), ("100::1", Refusal.RESERVED),
    ("64:ff9b:1::1", Refusal.RESERVED), ("fec0::1", Refusal.RESERVED),
    # IPv6 forms of IPv4 addresses are judged by the IPv4 address they carry.
    ("::ffff:127.0.0.1", Refusal.LOOPBACK), ("::ffff:169.254.169.254", Refusal.METADATA),
    ("::ffff:10.1.2.3", Refusal.PRIVATE), ("::127.0.0.1", Refusal.LOOPBACK),
    ("2002:7f00:1::1", Refusal.LOOPBACK), ("2002:a9fe:a9fe::", Refusal.METADATA),
    ("64:ff9b::a00:1", Refusal.PRIVATE), ("64:ff9b::7f00:1", Refusal.LOOPBACK),
    # Public addresses.
    ("8.8.8.8", None), ("1.1.1.1", None), ("2606:4700:4700::1111", None), ("::ffff:8.8.8.8", None),
    ("64:ff9b::808:808", None), ("2002:808:808::1", None),
])
def test_addresses_are_judged_by_kind(address: str, refusal: Refusal | None) -> None:
    assert refusal_of(ip_address(address)) is refusal


@pytest.mark.parametrize(("host", "address", "refusal"), [
    ("127.0.0.1", "127.0.0.1", Refusal.LOOPBACK),
    ("localhost", "127.0.0.1", Refusal.LOOPBACK),
    ("[::1]", "::1", Refusal.LOOPBACK),
    ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1", Refusal.LOOPBACK),
    ("0x7f.1", "127.0.0.1", Refusal.LOOPBACK),  # inet_aton spelling: judged by what it resolves to
    ("0.0.0.0", "0.0.0.0", Refusal.UNSPECIFIED),
    ("10.0.0.1", "10.0.0.1", Refusal.PRIVATE),
    ("169.254.169.254", "169.254.169.254", Refusal.METADATA),
    ("[fd00:ec2::254]", "fd00:ec2::254", Refusal.METADATA),
    ("100.64.0.1", "100.64.0.1", Refusal.SHARED),
])
async def test_a_refused_address_is_never_connected_to(host: str, address: str, refusal: Refusal) -> None:
    with LocalServer(ok) as server:
        async with OutboundClient(timeout=2) as client:
            with pytest.raises(OutboundRefused) as caught:
                await client.request("GET", server.url(host=host))
        assert server.connections == 0
    assert caught.value.reason is refusal
    assert caught.value.address == ip_address(address)


async def test_the_refusal_names_the_address_and_why() -> None:
    async with OutboundClient(timeout=2) as client:
        with pytest.raises(OutboundRefused) as by_address:
            await client.request("GET", "http://127.0.0.1:9/")
        with pytest.raises(OutboundRefused) as by_name:
            await client.request("GET", "http://localhost:9/")
        with pytest.raises(OutboundRefused) as mapped:
            await client.request("GET", "http://[::ffff:127.0.0.1]:9/")
    assert "127.0.0.1 is a loopback address" in by_address.value.message
    assert "localhost resolves to 127.0.0.1, a loopback address" in by_name.value.message
    assert "::ffff:127.0.0.1 is an IPv4-mapped form of 127.0.0.1, a loopback address" in mapped.value.message
    assert "PARLEY_OUTBOUND_ALLOW" in by_address.value.message


async def test_a_refusal_does_not_repeat_a_password_from_the_url() -> None:
    async with OutboundClient(timeout=2) as client:
        with pytest.raises(OutboundRefused) as caught:
            await client.request("GET", "http://user:hunter2@example.com/path")
    assert caught.value.reason is Refusal.USERINFO
    assert "hunter2" not in caught.value.message and "hunter2" not in caught.value.url


@pytest.mark.parametrize(("url", "refusal"), [
    ("ftp://example.com/file", Refusal.SCHEME),
    ("file:///etc/passwd", Refusal.SCHEME),
    ("gopher://127.0.0.1:70/", Refusal.SCHEME),
    ("//example.com/", Refusal.SCHEME),
    ("http://user:secret@{host}/", Refusal.USERINFO),
    ("http://user@{host}/", Refusal.USERINFO),
    ("http:///path-only", Refusal.INVALID_URL),
    ("http://exa mple.com/", Refusal.INVALID_URL),
])
async def test_a_url_that_is_not_plain_http_is_refused(url: str, refusal: Refusal) -> None:
    with LocalServer(ok) as server:
        async with OutboundClient(allow=LOCAL, timeout=2) as client:
            with pytest.raises(OutboundRefused) as caught:
                await client.request("GET", url.format(host=f"127.0.0.1:{server.port}"))
        assert server.connections == 0
    assert caught.value.reason is refusal


async def test_a_bad_method_or_header_is_refused_before_connecting() -> None:
    with LocalServer(ok) as server:
        async with OutboundClient(allow=LOCAL, timeout=2) as client:
            with pytest.raises(OutboundRefused) as method:
                await client.request("CONNECT", server.url())
            with pytest.raises(OutboundRefused) as header:
                await client.request("GET", server.url(), headers={"X-Evil": "a\r\nHost: other"})
        assert server.connections == 0
    assert method.value.reason is Refusal.METHOD
    assert header.value.reason is Refusal.HEADER


# -- the allow-list ----------------------------------------------------------------------------------

async def test_an_allowed_address_gets_status_headers_and_body() -> None:
    with LocalServer(ok) as server:
        async with OutboundClient(allow=LOCAL, timeout=2) as client:
            response = await client.request("post", server.url("/hook?x=1"), content=b"payload",
                                            headers={"Content-Type": "text/plain", "Host": "ignored.example"})
    assert response.status == 200
    assert response.body == b"hello payload"
    assert response.headers["x-reply"] == "yes"
    assert response.headers["x-method"] == "POST"
    assert response.url == server.url("/hook?x=1")
    assert 0 <= response.elapsed_seconds < 2
    [seen] = server.requests
    assert (seen.method, seen.target, seen.body) == ("POST", "/hook?x=1", b"payload")
    assert seen.headers["host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["content-type"] == "text/plain"


async def test_a_name_on_the_allow_list_is_sent_its_own_host_header() -> None:
    with LocalServer(ok) as server:
        async with OutboundClient(allow=["LocalHost."], timeout=2) as client:
            response = await client.request("GET", server.url(host="localhost"))
    assert response.status == 200
    assert response.url == server.url(host="localhost")
    assert server.requests[0].headers["host"] == f"localhost:{server.port}"


async def test_a_metadata_address_passes_only_when_listed_exactly() -> None:
    url = "http://169.254.169.254/latest/meta-data/"
    async with OutboundClient(allow=["169.254.0.0/16", "0.0.0.0/0"]) as wide:
        with pytest.raises(OutboundRefused) as caught:
            await wide.check(url)
        assert caught.value.reason is Refusal.METADATA
        assert await wide.check("http://169.254.1.1/") == (ip_address("169.254.1.1"),)
    async with OutboundClient(allow=["169.254.169.254"]) as exact:
        assert await exact.check(url) == (ip_address("169.254.169.254"),)


async def test_an_allowed_network_also_admits_the_mapped_form() -> None:
    async with OutboundClient(allow=["127.0.0.0/8"]) as client:
        assert await client.check("http://[::ffff:127.0.0.1]/") == (ip_address("::ffff:127.0.0.1"),)
        with pytest.raises(OutboundRefused):
            await client.check("http://[::1]/")


def test_the_allow_list_setting_takes_networks_addresses_and_names() -> None:
    settings = Settings.from_env({"PARLEY_OUTBOUND_ALLOW": "10.0.0.0/8, 192.0.2.7,Hooks.Internal.,::1"})
    assert settings.outbound_allow == (ip_network("10.0.0.0/8"), IPv4Network("192.0.2.7/32"), "hooks.internal",
                                       ip_network("::1/128"))
    assert Settings().outbound_allow == ()
    assert (Settings().outbound_timeout_seconds, Settings().outbound_max_response_bytes) == (10.0, 1024 * 1024)
    for bad in ("10.0.0.1/8", "http://hooks.internal", "a b", "999.1.1.1"):
        with pytest.raises(ConfigError):
            Settings.from_env({"PARLEY_OUTBOUND_ALLOW": bad})


# -- redirects -----------------------------------------------------------------------------------------

def redirecting(routes: dict[str, tuple[int, str]]) -> Handler:
    def handle(request: Received, conn: socket.socket) -> None:
        if request.target in routes:
            status, location = routes[request.target]
            respond(conn, status, (("Location", location),))
        else:
            ok(request, conn)
    return handle


@pytest.mark.parametrize(("location", "refusal"), [
    ("http://169.254.169.254/latest/meta-data/", Refusal.METADATA),
    ("http://10.0.0.1/", Refusal.PRIVATE),
    ("http://[::ffff:127.0.0.2]:{port}/", Refusal.LOOPBACK),  # LOCAL is 127.0.0.1 only
    ("ftp://example.com/", Refusal.SCHEME),
])
async def test_a_redirect_to_a_refused_address_is_refused(location: str, refusal: Refusal) -> None:
    with LocalServer(ok) as server:
        server.handler = redirecting({"/start": (302, location.format(port=server.port))})
        async with OutboundClient(allow=LOCAL, timeout=2) as client:
            with pytest.raises(OutboundRefused) as caught:
                await client.request("GET", server.url("/start"))
    assert caught.value.reason is refusal
    assert caught.value.message.startswith(f"http://127.0.0.1:{server.port} redirected to a URL that is not allowed")
    assert [r.target for r in server.requests] == ["/start"]


async def test_a_redirect_chain_longer_than_the_limit_fails() -> None:
    with LocalServer(redirecting({"/loop": (302, "/loop")})) as server:
        async with OutboundClient(allow=LOCAL, timeout=2, max_redirects=3) as client:
            with pytest.raises(OutboundTooManyRedirects):
                await client.request("GET", server.url("/loop"))
            with pytest.raises(OutboundTooManyRedirects):
                await client.request("GET", server.url("/loop"), max_redirects=0)
    assert len(server.requests) == 4 + 1


async def test_307_keeps_method_and_body_and_303_turns_into_a_get() -> None:
    routes = {"/307": (307, "/echo"), "/308": (308, "/echo"), "/303": (303, "/echo"), "/302": (302, "/echo")}
    with LocalServer(redirecting(routes)) as server:
        async with OutboundClient(allow=LOCAL, timeout=2) as client:
            kept = [await client.request("POST", server.url(path), content=b"data",
                                         headers={"Content-Type": "text/plain", "Authorization": "Bearer t"})
                    for path in ("/307", "/308")]
            changed = [await client.request("POST", server.url(path), content=b"data",
                                            headers={"Content-Type": "text/plain", "Authorization": "Bearer t"})
                       for path in ("/303", "/302")]
            put = await client.request("PUT", server.url("/302"), content=b"data")
    assert [r.body for r in kept] == [b"hello data"] * 2
    assert [r.body for r in changed] == [b"hello "] * 2
    assert put.headers["x-method"] == "PUT" and put.body == b"hello data"  # browsers change only a POST on 302
    followed = [r for r in server.requests if r.target == "/echo"]
    assert [(r.method, r.body) for r in followed] == [("POST", b"data")] * 2 + [("GET", b"")] * 2 + [("PUT", b"data")]
    assert all(r.headers["authorization"] == "Bearer t" for r in followed[:4])  # same origin: kept
    assert "content-type" not in followed[2].headers and "content-type" not in followed[3].headers
    assert kept[0].url == server.url("/echo")


async def test_credentials_are_dropped_when_a_redirect_changes_host() -> None:
    with LocalServer(ok) as server:
        server.handler = redirecting({"/jump": (307, server.url("/echo", host="localhost"))})
        async with OutboundClient(allow=[*LOCAL, "localhost"], timeout=2) as client:
            response = await client.request("POST", server.url("/jump"), content=b"x", headers={
                "Authorization": "Bearer secret", "X-Api-Key": "prl_k", "Cookie": "a=b",
                "X-Parley-Signature": "sha256=abc", "X-Trace": "kept"})
    assert response.url == server.url("/echo", host="localhost")
    first, second = server.requests
    assert first.headers["authorization"] == "Bearer secret"
    assert second.headers["host"] == f"localhost:{server.port}"
    assert second.headers["x-trace"] == "kept"
    assert not {"authorization", "x-api-key", "cookie", "x-parley-signature"} & second.headers.keys()


# -- limits --------------------------------------------------------------------------------------------

TOTAL_STREAMED = 64 * 1024 * 1024


async def test_a_response_over_the_limit_fails_while_streaming() -> None:
    sent = 0

    def flood(request: Received, conn: socket.socket) -> None:
        nonlocal sent
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")  # no length: read until closed
        chunk = b"x" * 65536
        while sent < TOTAL_STREAMED:
            conn.sendall(chunk)
            sent += len(chunk)

    with LocalServer(flood) as server:
        async with OutboundClient(allow=LOCAL, timeout=5, max_response_bytes=100_000) as client:
            with pytest.raises(OutboundTooLarge):
                await client.request("GET", server.url())
        assert await anyio.to_thread.run_sync(server.handled.wait, 5)
    assert sent < TOTAL_STREAMED  # the client hung up: the server could not send it all


async def test_a_declared_length_over_the_limit_fails_before_the_body() -> None:
    def announce(request: Received, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n")
        server.stop.wait(5)  # and never send it

    with LocalServer(announce) as server:
        async with OutboundClient(allow=LOCAL, timeout=5) as client:
            with anyio.fail_after(2):
                with pytest.raises(OutboundTooLarge):
                    await client.request("GET", server.url(), max_response_bytes=1024)


async def test_a_request_body_over_the_limit_is_not_sent() -> None:
    with LocalServer(ok) as server:
        async with OutboundClient(allow=LOCAL, timeout=2, max_request_bytes=10) as client:
            with pytest.raises(OutboundTooLarge):
                await client.request("POST", server.url(), content=b"x" * 11)
            assert (await client.request("POST", server.url(), content=b"x" * 10)).status == 200
        assert server.connections == 1


async def test_a_slow_server_hits_the_time_limit() -> None:
    def stall(request: Received, conn: socket.socket) -> None:
        server.stop.wait(5)

    with LocalServer(stall) as server:
        async with OutboundClient(allow=LOCAL, timeout=5) as client:
            with anyio.fail_after(2):
                with pytest.raises(OutboundTimeout):
                    await client.request("GET", server.url(), timeout=0.3)


async def test_a_workflow_http_step_never_waits_past_the_operators_limit() -> None:
    def stall(request: Received, conn: socket.socket) -> None:
        server.stop.wait(5)

    with LocalServer(stall) as server:
        async with OutboundClient(allow=LOCAL, timeout=0.3) as client:
            fetch = fetch_with(client)
            with anyio.fail_after(2):  # the step asked for 60 s; the hub allows 0.3 s
                with pytest.raises(StepError) as caught:
                    await fetch("GET", server.url(), {}, None, 60.0)
    assert caught.value.code == "http_failed" and "0.3" in str(caught.value)


async def test_a_server_that_trickles_hits_the_same_total_limit() -> None:
    def trickle(request: Received, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            if server.stop.wait(0.05):
                return
            conn.sendall(b"x")

    with LocalServer(trickle) as server:
        async with OutboundClient(allow=LOCAL, timeout=0.5) as client:
            with anyio.fail_after(2):
                with pytest.raises(OutboundTimeout):
                    await client.request("GET", server.url())


async def test_a_refused_connection_is_a_failure_not_a_refusal() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    async with OutboundClient(allow=LOCAL, timeout=2) as client:
        with pytest.raises(OutboundFailed) as caught:
            await client.request("GET", f"http://127.0.0.1:{port}/")
    assert type(caught.value) is OutboundFailed


async def test_cookies_from_one_response_are_not_sent_with_the_next_request() -> None:
    def set_cookie(request: Received, conn: socket.socket) -> None:
        respond(conn, 200, (("Set-Cookie", "session=abc; Path=/"),))

    with LocalServer(set_cookie) as server:
        async with OutboundClient(allow=LOCAL, timeout=2) as client:
            first = await client.request("GET", server.url())
            await client.request("GET", server.url())
    assert first.headers["set-cookie"].startswith("session=abc")
    assert "cookie" not in server.requests[1].headers


# -- https: the address is pinned, the certificate is checked against the name ---------------------------

@dataclass(frozen=True)
class Certificates:
    ca_pem: bytes
    chain: Path
    key: Path


def _certificates(directory: Path, name: str) -> Certificates:
    """A CA and a server certificate for `name` only (no IP address in it)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Parley test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Certificates(ca.public_bytes(serialization.Encoding.PEM), chain, key_file)


@pytest.fixture(scope="module")
def localhost_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return _certificates(tmp_path_factory.mktemp("tls"), "localhost")


@pytest.fixture
def tls_server(localhost_certificates: Certificates) -> Iterator[LocalServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(localhost_certificates.chain, localhost_certificates.key)
    with LocalServer(ok, tls=context) as server:
        yield server


@pytest.fixture
def trusting(localhost_certificates: Certificates) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=localhost_certificates.ca_pem.decode())


async def test_https_to_a_pinned_address_verifies_the_certificate_for_the_name(
        tls_server: LocalServer, trusting: ssl.SSLContext) -> None:
    async with OutboundClient(allow=["localhost"], timeout=2, ssl_context=trusting) as client:
        response = await client.request("GET", tls_server.url(host="localhost", scheme="https"))
    assert response.status == 200
    assert tls_server.sni == ["localhost"]
    assert tls_server.requests[0].headers["host"] == f"localhost:{tls_server.port}"
    assert tls_server.requests[0].headers["connection"] == "close"


async def test_https_fails_when_the_certificate_does_not_name_the_host(
        tls_server: LocalServer, trusting: ssl.SSLContext) -> None:
    # The certificate names localhost only; asked for by address, verification must fail.
    async with OutboundClient(allow=LOCAL, timeout=2, ssl_context=trusting) as client:
        with pytest.raises(OutboundFailed) as caught:
            await client.request("GET", tls_server.url(scheme="https"))
    assert type(caught.value) is OutboundFailed
    assert tls_server.requests == []


async def test_https_fails_against_an_untrusted_certificate(tls_server: LocalServer) -> None:
    async with OutboundClient(allow=["localhost"], timeout=2) as client:  # the default CA bundle
        with pytest.raises(OutboundFailed):
            await client.request("GET", tls_server.url(host="localhost", scheme="https"))
    assert tls_server.requests == []
