"""SSRF guard for outbound URLs (audio_url, webhooks): vet every address, connect only to it.

The host is resolved once; every address it resolves to must be public unicast unless the host
name or the address is on the allowlist (LEXIA_SSRF_ALLOWLIST: CIDRs, IP addresses, host names
and `*.domain` wildcards). The connection then goes to the vetted address itself, with the
original name in the Host header and in TLS SNI and certificate checks, so a second DNS lookup
(DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

from lexia.errors import InvalidURL, UrlNotAllowed

MAX_URL_LENGTH = 2048
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
# The URLs Lexia fetches or calls: http(s), a host name or IP literal, an optional port, then
# printable ASCII (other characters percent-encoded), no user info. The OpenAPI document shows
# the same pattern, so what a client reads there is exactly what is accepted.
URL_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(:{_PORT})?([/?#][!-~]*)?$"
_URL = re.compile(URL_PATTERN)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Ranges `is_global` lets through that are still not public unicast destinations.
_NOT_PUBLIC: tuple[Network, ...] = (
    ipaddress.ip_network("100.64.0.0/10"),  # CGNAT (is_global is already False; kept explicit)
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215): only inside one network
    ipaddress.ip_network("2001::/32"),  # Teredo: the client address inside is obfuscated
)
# IPv6 forms whose last 32 bits are an IPv4 address a packet may end up at.
_LOW_32_BITS: tuple[ipaddress.IPv6Network, ...] = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated), e.g. ::7f00:2 = 127.0.0.2
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (RFC 2765)
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64 local use (RFC 8215)
)


class ResolveError(OSError):
    """The host name did not resolve to any address."""


@dataclass(frozen=True, slots=True)
class Target:
    """A vetted destination: the URL as given and the address to connect to."""

    url: httpx.URL
    host: str
    port: int
    address: str


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, compatible, translated, NAT64, 6to4,
    Teredo (server and de-obfuscated client) and ISATAP interface identifiers."""
    found: list[ipaddress.IPv4Address] = []
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in net for net in _LOW_32_BITS):
        found.append(low)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if (int(address) >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP: ::0:5efe:a.b.c.d or ::200:5efe:…
        found.append(low)
    return found


def is_public(address: IPAddress) -> bool:
    """True for a public unicast address (not private, loopback, link-local, CGNAT, reserved…).

    An IPv6 address that embeds an IPv4 address is judged by that address too, so
    `::ffff:127.0.0.1`, `::7f00:2`, `64:ff9b::a9fe:a9fe` or `2002:7f00:1::` cannot reach inside.
    """
    if isinstance(address, ipaddress.IPv6Address) and not all(is_public(inner) for inner in embedded_ipv4(address)):
        return False
    if not address.is_global or address.is_multicast or address.is_unspecified:
        return False
    return not any(address in net for net in _NOT_PUBLIC if net.version == address.version)


async def _system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"cannot resolve host {host!r}") from exc
    return [str(info[4][0]) for info in infos]


class NetGuard:
    """Parses, resolves and vets outbound URLs; builds requests pinned to the vetted address."""

    def __init__(self, allowlist: Iterable[str] = (), *, resolver: Resolver | None = None) -> None:
        self._networks: list[Network] = []
        self._hosts: set[str] = set()
        self._suffixes: list[str] = []
        for raw in allowlist:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                self._suffixes.append(entry[1:])
            else:
                self._hosts.add(entry.rstrip("."))
        self._resolve = resolver or _system_resolver

    def parse(self, url: str, *, param: str) -> httpx.URL:
        """Check the URL's form: http(s), a host, no user info, at most 2048 characters."""
        if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
            raise InvalidURL(f"{param} must be an http(s) URL of at most {MAX_URL_LENGTH} characters", param=param)
        if not _URL.match(url):
            if not url.lower().startswith(("http://", "https://")):
                raise InvalidURL(f"{param} must use http or https", param=param)
            raise InvalidURL(
                f"{param} must be an absolute http(s) URL in printable ASCII (percent-encode other characters), "
                "with a host name or IP literal and no user info", param=param,
            )
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise InvalidURL(f"{param} is not a valid URL", param=param) from None
        if parsed.scheme not in ("http", "https"):
            raise InvalidURL(f"{param} must use http or https", param=param)
        if not parsed.host:
            raise InvalidURL(f"{param} has no host", param=param)
        if parsed.userinfo:
            raise InvalidURL(f"{param} must not contain user info", param=param)
        return parsed

    def host_allowed(self, host: str) -> bool:
        """True when the host name itself is on the allowlist."""
        name = host.lower().rstrip(".")
        return name in self._hosts or any(name.endswith(s) for s in self._suffixes)

    def address_allowed(self, address: IPAddress) -> bool:
        """True for a public address or one inside an allowlisted network."""
        return is_public(address) or any(
            address.version == net.version and address in net for net in self._networks
        )

    async def vet(self, url: httpx.URL | str, *, param: str) -> Target:
        """Resolve the host once and refuse it unless every address is allowed (422 url_not_allowed)."""
        parsed = url if isinstance(url, httpx.URL) else self.parse(url, param=param)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = [host] if literal is not None else await self._resolve(host, port)
        if not addresses:
            raise ResolveError(f"cannot resolve host {host!r}")
        host_ok = literal is None and self.host_allowed(host)
        vetted: list[IPAddress] = []
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not host_ok and not self.address_allowed(address):
                raise UrlNotAllowed(
                    f"{param} points to a non-public address; add it to LEXIA_SSRF_ALLOWLIST to allow it",
                    param=param,
                )
            vetted.append(address)
        return Target(url=parsed, host=host, port=port, address=str(vetted[0]))

    @staticmethod
    def build_request(
        client: httpx.AsyncClient,
        method: str,
        target: Target,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Request:
        """A request that connects to the vetted address, naming the original host (Host, SNI)."""
        url = target.url.copy_with(host=target.address)
        default_port = 443 if target.url.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        if ":" in target.host and not target.host.startswith("["):
            host_header = f"[{target.host}]" if target.port == default_port else f"[{target.host}]:{target.port}"
        merged = {**(headers or {}), "Host": host_header}
        request = client.build_request(method, url, headers=merged, content=content)
        if target.url.scheme == "https":
            request.extensions["sni_hostname"] = target.host
        return request
