"""The hub's one way to send an HTTP request to a URL a user gave (workflow `http` steps, webhooks).

A user-given URL is a way into the hub's own network (server-side request forgery), so a request
may reach public addresses only. The host is resolved once, every address it resolves to is
checked, and the request connects to an address that was checked: it is sent to the IP literal,
with the original `Host` header, and for https with the host name as SNI and for certificate
verification (httpcore's `sni_hostname` extension becomes `server_hostname` of the TLS handshake).
Checking one lookup and letting the HTTP library resolve the name again is the DNS-rebinding hole:
the second answer can be 127.0.0.1. Each redirect is checked the same way, and followed here, not
by httpx.

Refused: loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10), the cloud
metadata addresses, carrier-grade NAT (100.64/10), multicast, unspecified, and reserved,
documentation and benchmark ranges; IPv6 forms that carry an IPv4 address (mapped, compatible,
6to4, NAT64) are judged by that address. Decided with `ipaddress` and an explicit table, so the
verdict does not move with the Python version. The operator's allow-list (CIDR networks or exact
host names) lets some through; a metadata address only when it is listed as exactly itself.

Errors:

    OutboundError
     ├── OutboundRefused            not sent: the URL, a header or an address is not allowed
     └── OutboundFailed             allowed, but no usable response (connect, TLS, protocol)
          ├── OutboundTimeout       the request's total time limit passed
          ├── OutboundTooLarge      the request body or the response is over its limit
          └── OutboundTooManyRedirects
"""

import http.cookiejar
import re
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from types import TracebackType
from typing import Final, Self

import anyio
import httpx

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
AllowEntry = IPNetwork | str
HeaderInput = Mapping[str, str] | Sequence[tuple[str, str]]

DEFAULT_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_MAX_RESPONSE_BYTES: Final = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES: Final = 1024 * 1024
DEFAULT_MAX_REDIRECTS: Final = 5
USER_AGENT: Final = "Parley-Hub"

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CLOSE_GRACE_SECONDS: Final = 2.0

# Hop-by-hop and framing headers are this module's to set; a caller's copy is dropped.
_MANAGED_HEADERS: Final = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                                     "te", "trailer", "upgrade", "proxy-connection"})
# Not sent to another origin after a redirect: anything that looks like a credential.
_CREDENTIAL_HEADER: Final = re.compile(r"auth|token|secret|passw|cookie|session|signature|api-?key", re.IGNORECASE)
# Describe a body that a 301/302/303 turned into a GET no longer has (fetch's "request-body-header names").
_BODY_HEADERS: Final = frozenset({"content-type", "content-encoding", "content-language", "content-location"})
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE: Final = re.compile(r"[\x00\r\n]")
_HOST_NAME: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


class Refusal(StrEnum):
    """Why a request was refused before anything was sent."""

    INVALID_URL = "invalid_url"
    SCHEME = "scheme"
    USERINFO = "userinfo"
    METHOD = "method"
    HEADER = "header"
    UNSPECIFIED = "unspecified"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link_local"
    METADATA = "metadata"
    PRIVATE = "private"
    SHARED = "shared"
    MULTICAST = "multicast"
    RESERVED = "reserved"


_ADDRESS_KINDS: Final = {
    Refusal.UNSPECIFIED: "an unspecified address",
    Refusal.LOOPBACK: "a loopback address",
    Refusal.LINK_LOCAL: "a link-local address",
    Refusal.METADATA: "a cloud metadata address",
    Refusal.PRIVATE: "a private address",
    Refusal.SHARED: "a carrier-grade NAT (shared) address",
    Refusal.MULTICAST: "a multicast address",
    Refusal.RESERVED: "a reserved address, not publicly routable",
}

_METADATA: Final = frozenset(ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
_SHARED: Final = ip_network("100.64.0.0/10")
# Special-purpose ranges (IANA registries), listed so the verdict does not depend on which of them a
# Python version's `is_global` knows (3.11 misses 192.0.0.0/24, 2002::/16, 64:ff9b:1::/48, …).
_NOT_PUBLIC: Final = tuple(ip_network(n) for n in (
    "0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "240.0.0.0/4",
    "::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16", "fec0::/10",
))
_V4_COMPATIBLE: Final = ip_network("::/96")
_NAT64: Final = ip_network("64:ff9b::/96")


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 form stands for, and the form's name."""
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped form", address.ipv4_mapped
    if address.sixtofour is not None:
        return "a 6to4 form", address.sixtofour
    if address in _NAT64:
        return "a NAT64 form", IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _V4_COMPATIBLE and int(address) > 1:  # not :: or ::1
        return "an IPv4-compatible form", IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _plain_refusal(address: IPAddress) -> Refusal | None:
    if address in _METADATA:
        return Refusal.METADATA
    if address.is_unspecified:
        return Refusal.UNSPECIFIED
    if address.is_loopback:
        return Refusal.LOOPBACK
    if address.is_link_local:
        return Refusal.LINK_LOCAL
    if address.is_multicast:
        return Refusal.MULTICAST
    if address in _SHARED:
        return Refusal.SHARED
    if any(address in network for network in _NOT_PUBLIC):
        return Refusal.RESERVED
    if address.is_private:
        return Refusal.PRIVATE
    if not address.is_global or address.is_reserved:
        return Refusal.RESERVED
    return None


def refusal_of(address: IPAddress) -> Refusal | None:
    """Why a request may not go to `address` unless the operator allows it; None for a public address."""
    if isinstance(address, IPv6Address) and (embedded := _embedded_ipv4(address)) is not None:
        return _plain_refusal(embedded[1])
    return _plain_refusal(address)


def _show(address: IPAddress) -> str:
    """Python before 3.13 writes ::ffff:127.0.0.1 as ::ffff:7f00:1."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _kind(address: IPAddress, refusal: Refusal) -> str:
    """`a loopback address`, or `an IPv4-mapped form of 127.0.0.1, a loopback address`."""
    kind = _ADDRESS_KINDS[refusal]
    if isinstance(address, IPv6Address) and (embedded := _embedded_ipv4(address)) is not None:
        form, inner = embedded
        return f"{form} of {inner}, {kind}"
    return kind


def _host_key(name: str) -> str:
    return name.lower().rstrip(".")


def allow_entry(entry: str) -> AllowEntry:
    """One allow-list entry: a CIDR network or an address (a network of one), or an exact host name.

    Raises:
        ValueError: neither (a network with host bits set, like `10.0.0.1/8`, is refused, not widened).
    """
    text = entry.strip()
    try:
        return ip_network(text)
    except ValueError as exc:
        if "/" in text or ":" in text or re.fullmatch(r"[0-9.]+", text):
            raise ValueError(f"{text!r}: {exc}") from None
    if len(text) > 253 or not _HOST_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is neither an IP network nor a host name")
    return _host_key(text)


class AllowList:
    """What the operator lets through although `refusal_of` refuses it."""

    def __init__(self, entries: Iterable[AllowEntry] = ()) -> None:
        parsed = [allow_entry(e) if isinstance(e, str) else e for e in entries]
        self.networks: tuple[IPNetwork, ...] = tuple(e for e in parsed if not isinstance(e, str))
        self.names: frozenset[str] = frozenset(e for e in parsed if isinstance(e, str))

    def permits(self, host: str, address: IPAddress, refusal: Refusal) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and (embedded := _embedded_ipv4(address)) is not None:
            candidates.append(embedded[1])
        if refusal is Refusal.METADATA:
            # Never through a wider network or a name: only an entry for exactly this address.
            return any(network.num_addresses == 1 and candidate in network
                       for network in self.networks for candidate in candidates)
        if _host_key(host) in self.names:
            return True
        return any(candidate in network for network in self.networks for candidate in candidates)


class OutboundError(Exception):
    """An outbound request that did not produce a response; `message` says what to change."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class OutboundRefused(OutboundError):
    """Nothing was sent: the URL, a header or an address is not allowed. `address` is the refused
    address for the address refusals, else None."""

    def __init__(self, message: str, *, url: str, reason: Refusal, address: IPAddress | None = None) -> None:
        super().__init__(message, url=url)
        self.reason = reason
        self.address = address


class OutboundFailed(OutboundError):
    """The request was allowed but gave no usable response (connect, TLS, protocol errors)."""


class OutboundTimeout(OutboundFailed):
    """The request's total time limit passed (resolving, connecting, redirects and body included)."""


class OutboundTooLarge(OutboundFailed):
    """The request body or the response body is over its limit."""


class OutboundTooManyRedirects(OutboundFailed):
    """The server redirected more often than the limit allows."""


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """A complete response. `headers` has lower-cased names; a repeated header's values are joined
    with ", ". `url` is the final URL after redirects, with its host name (not the address used).
    `body` is as sent: the hub asks for `Accept-Encoding: identity` and does not decode."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str
    elapsed_seconds: float


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpx.URL
    host: str  # as resolved: IDNA-encoded name or IP literal, no brackets
    is_name: bool
    host_header: str
    addresses: tuple[IPAddress, ...]


def _origin_text(url: httpx.URL) -> str:
    """Messages name the origin, not the whole URL: a path or query may hold a secret (a webhook token)."""
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def _parse_url(text: str | httpx.URL) -> httpx.URL:
    shown = str(text)
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise OutboundRefused(f"not a valid URL: {exc}", url=shown, reason=Refusal.INVALID_URL) from None
    if url.scheme not in _DEFAULT_PORTS:
        raise OutboundRefused(f"only http and https URLs are allowed, not {url.scheme or 'no'} scheme",
                              url=shown, reason=Refusal.SCHEME)
    if url.userinfo:
        raise OutboundRefused("a URL may not carry a user name or password; send credentials in a header",
                              url=str(url.copy_with(userinfo=b"")), reason=Refusal.USERINFO)
    if not url.raw_host:
        raise OutboundRefused("the URL has no host", url=shown, reason=Refusal.INVALID_URL)
    return url.copy_with(fragment=None)


def _caller_headers(headers: HeaderInput | None, url: str) -> list[tuple[str, str]]:
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    kept = []
    for name, value in items:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise OutboundRefused(f"header {name!r} is not a valid HTTP header (name or value)", url=url,
                                  reason=Refusal.HEADER)
        if name.lower() not in _MANAGED_HEADERS:
            kept.append((name, value))
    return kept


class OutboundClient:
    """Sends checked outbound requests over one shared `httpx.AsyncClient`.

    The owner (the hub) creates one and closes it with `aclose()` or `async with`. Plain-http
    connections are kept alive per address; https requests are sent with `Connection: close`,
    because httpx pools connections by (scheme, address, port), and a TLS connection verified for
    one name must not carry a request for another name that resolves to the same address.

    Args:
        allow: the operator's allow-list (`Settings.outbound_allow`): networks, addresses, host names.
        timeout: seconds for a whole request, redirects and body included.
        max_response_bytes: the largest response body read; a larger one fails while streaming.
        max_request_bytes: the largest request body sent.
        max_redirects: redirects followed before the request fails.
        ssl_context: what https verifies against; default: httpx's default (certifi) CA bundle.
    """

    def __init__(self, *, allow: Iterable[AllowEntry] = (), timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_redirects: int = DEFAULT_MAX_REDIRECTS,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.allow = AllowList(allow)
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_request_bytes = max_request_bytes
        self.max_redirects = max_redirects
        # No cookie is ever kept: one client serves every user's requests.
        no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._client = httpx.AsyncClient(
            verify=ssl_context if ssl_context is not None else True,
            trust_env=False,  # a proxy from the environment would resolve the name itself
            follow_redirects=False,
            cookies=no_cookies,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, url: str) -> tuple[IPAddress, ...]:
        """Resolve `url`'s host and check it as a request would (e.g. when a webhook is saved).

        Returns:
            The addresses the host resolves to, all allowed.

        Raises:
            OutboundRefused: the URL or one of its addresses is not allowed.
            OutboundFailed: the host does not resolve (`OutboundTimeout`: not within the time limit).
        """
        try:
            with anyio.fail_after(self.timeout):
                return (await self._resolve(_parse_url(url))).addresses
        except TimeoutError:
            raise OutboundTimeout(f"resolving the host took over {self.timeout:g} s", url=url) from None

    async def request(self, method: str, url: str, *, headers: HeaderInput | None = None,
                      content: bytes | None = None, timeout: float | None = None,
                      max_response_bytes: int | None = None, max_redirects: int | None = None) -> OutboundResponse:
        """Send one request, following redirects, within the time and size limits.

        `timeout`, `max_response_bytes` and `max_redirects` override the client's for this request.
        Caller headers that frame the message (`Host`, `Content-Length`, `Connection`, …) are dropped.

        Raises:
            OutboundRefused: nothing was sent to a refused address (scheme, userinfo, method,
                header, or an address of the host or of a redirect target).
            OutboundFailed: and its subclasses, when the request was allowed but did not complete.
        """
        timeout = self.timeout if timeout is None else timeout
        limit = self.max_response_bytes if max_response_bytes is None else max_response_bytes
        redirects = self.max_redirects if max_redirects is None else max_redirects
        verb = method.upper()
        if verb not in METHODS:
            raise OutboundRefused(f"method {method!r} is not allowed; use one of {', '.join(sorted(METHODS))}",
                                  url=url, reason=Refusal.METHOD)
        body = bytes(content or b"")
        if len(body) > self.max_request_bytes:
            raise OutboundTooLarge(f"the request body is {len(body)} bytes; the limit is {self.max_request_bytes}",
                                   url=url)
        caller_headers = _caller_headers(headers, url)
        start = anyio.current_time()
        try:
            with anyio.fail_after(timeout):
                status, response_headers, response_body, final_url = await self._follow(
                    verb, _parse_url(url), caller_headers, body, limit, redirects)
        except TimeoutError:
            raise OutboundTimeout(f"no complete response within {timeout:g} s", url=url) from None
        return OutboundResponse(status=status, headers=response_headers, body=response_body, url=str(final_url),
                                elapsed_seconds=anyio.current_time() - start)

    async def _follow(self, method: str, url: httpx.URL, headers: list[tuple[str, str]], body: bytes, limit: int,
                      max_redirects: int) -> tuple[int, dict[str, str], bytes, httpx.URL]:
        previous: httpx.URL | None = None
        for hop in range(max_redirects + 1):
            try:
                target = await self._resolve(url)
            except OutboundRefused as exc:
                if previous is None:
                    raise
                raise _refused_redirect(previous, exc) from None
            response = await self._send(target, method, headers, body)
            try:
                location = response.headers.get("location") if response.status_code in _REDIRECTS else None
                if location is None:
                    data = await _read_limited(response, limit, url)
                    return response.status_code, dict(response.headers.items()), data, url
            finally:
                with anyio.move_on_after(_CLOSE_GRACE_SECONDS, shield=True):
                    await response.aclose()
            if hop == max_redirects:
                break
            try:
                next_url = _parse_url(_join(url, location))
            except OutboundRefused as exc:
                raise _refused_redirect(url, exc) from None
            method, headers, body = _redirected(response.status_code, method, headers, body,
                                                same_origin=_origin(next_url) == _origin(url))
            previous, url = url, next_url
        raise OutboundTooManyRedirects(f"{_origin_text(url)}: more than {max_redirects} redirects", url=str(url))

    async def _resolve(self, url: httpx.URL) -> _Target:
        shown = str(url)
        host = url.raw_host.decode("ascii")
        port = url.port or _DEFAULT_PORTS[url.scheme]
        try:
            literal: IPAddress | None = ip_address(host)
        except ValueError:
            literal = None
            if len(host) > 253 or not _HOST_NAME.fullmatch(host):
                raise OutboundRefused(f"{host!r} is not a valid host name", url=shown,
                                      reason=Refusal.INVALID_URL) from None
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise OutboundFailed(f"could not resolve {host}: {exc}", url=shown) from None
        addresses: list[IPAddress] = []
        for family, *_, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            # The scope of a link-local IPv6 address is dropped: an address, not an interface, is checked.
            address = ip_address(str(sockaddr[0]).partition("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OutboundFailed(f"{host} has no IPv4 or IPv6 address", url=shown)
        for address in addresses:
            refusal = refusal_of(address)
            if refusal is not None and not self.allow.permits(host, address, refusal):
                kind = _kind(address, refusal)
                shown_address = _show(address)
                why = f"{shown_address} is {kind}" if literal is not None else \
                    f"{host} resolves to {shown_address}, {kind}"
                remedy = ("only an allow-list entry for exactly this address lets it through"
                          if refusal is Refusal.METADATA else
                          "outbound requests go to public addresses unless the operator allows this one "
                          "(PARLEY_OUTBOUND_ALLOW)")
                raise OutboundRefused(f"{why}; {remedy}", url=shown, reason=refusal, address=address)
        bracketed = f"[{host}]" if isinstance(literal, IPv6Address) else host
        host_header = bracketed if url.port in (None, _DEFAULT_PORTS[url.scheme]) else f"{bracketed}:{url.port}"
        return _Target(url=url, host=host, is_name=literal is None, host_header=host_header,
                       addresses=tuple(addresses))

    async def _send(self, target: _Target, method: str, headers: list[tuple[str, str]],
                    body: bytes) -> httpx.Response:
        shown, where = str(target.url), _origin_text(target.url)
        https = target.url.scheme == "https"
        request_headers = [*headers, ("Host", target.host_header)]
        if https:
            request_headers.append(("Connection", "close"))
        extensions = {"sni_hostname": target.host} if https and target.is_name else {}
        failures: list[str] = []
        for address in target.addresses:
            request = self._client.build_request(method, target.url.copy_with(host=str(address)),
                                                 headers=request_headers, content=body or None,
                                                 extensions=extensions)
            try:
                return await self._client.send(request, stream=True)
            except httpx.ConnectError as exc:  # nothing was sent: the next address may answer
                failures.append(f"{_show(address)}: {_reason(exc)}")
            except httpx.TimeoutException as exc:
                raise OutboundTimeout(f"{where}: timed out ({_reason(exc)})", url=shown) from None
            except httpx.HTTPError as exc:
                raise OutboundFailed(f"{where}: {_reason(exc)}", url=shown) from None
        raise OutboundFailed(f"could not connect to {where} ({'; '.join(failures)})", url=shown)


async def _read_limited(response: httpx.Response, limit: int, request_url: httpx.URL) -> bytes:
    url, where = str(request_url), _origin_text(request_url)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise OutboundTooLarge(f"{where}: the response is {declared} bytes; the limit is {limit}", url=url)
    data = bytearray()
    over = False
    try:
        async for chunk in response.aiter_raw():
            if over:
                continue
            if len(data) + len(chunk) > limit:
                # Close the connection, then let the loop end on the read error that follows (after at most
                # what is already buffered): leaving it with `break` would strand httpx's and httpcore's
                # nested async generators, which trio reports as unraisable ResourceWarnings.
                over = True
                await response.aclose()
                continue
            data += chunk
    except httpx.TimeoutException as exc:
        raise OutboundTimeout(f"{where}: timed out reading the response ({_reason(exc)})", url=url) from None
    except httpx.HTTPError as exc:
        if not over:
            raise OutboundFailed(f"{where}: reading the response failed: {_reason(exc)}", url=url) from None
    if over:
        raise OutboundTooLarge(f"{where}: the response is over the limit of {limit} bytes", url=url)
    return bytes(data)


def _redirected(status: int, method: str, headers: list[tuple[str, str]], body: bytes, *,
                same_origin: bool) -> tuple[str, list[tuple[str, str]], bytes]:
    """The next request of a redirect, as browsers make it (the fetch standard): 303 becomes a GET
    (HEAD stays HEAD), 301 and 302 turn a POST into a GET, 307 and 308 keep method and body."""
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", b""
        headers = [(n, v) for n, v in headers if n.lower() not in _BODY_HEADERS]
    if not same_origin:
        headers = [(n, v) for n, v in headers if not _CREDENTIAL_HEADER.search(n)]
    return method, headers, body


def _join(url: httpx.URL, location: str) -> httpx.URL:
    try:
        return url.join(location)
    except httpx.InvalidURL as exc:
        raise OutboundRefused(f"not a valid URL: {exc}", url=location, reason=Refusal.INVALID_URL) from None


def _refused_redirect(source: httpx.URL, refused: OutboundRefused) -> OutboundRefused:
    return OutboundRefused(f"{_origin_text(source)} redirected to a URL that is not allowed: {refused.message}",
                           url=refused.url, reason=refused.reason, address=refused.address)


def _origin(url: httpx.URL) -> tuple[str, bytes, int]:
    return url.scheme, url.raw_host.lower(), url.port or _DEFAULT_PORTS[url.scheme]


def _reason(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
