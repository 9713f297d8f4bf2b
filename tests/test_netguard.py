"""The SSRF guard (API.md §7.5): every address form that can reach inside is refused."""

from __future__ import annotations

import ipaddress
import re

import pytest

from lexia.errors import InvalidURL, UrlNotAllowed
from lexia.netguard import URL_PATTERN, NetGuard, is_public

REFUSED = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.0.8", "198.18.0.1", "240.0.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1", "100::1",
    "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254",  # IPv4-mapped
    "::7f00:2", "::a9fe:a9fe", "::10.0.0.1",  # IPv4-compatible
    "::ffff:0:a00:1",  # IPv4-translated
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b::c0a8:101",  # NAT64 well-known prefix
    "64:ff9b:1::a9fe:a9fe", "64:ff9b:1::808:808",  # NAT64 local use
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101::1",  # 6to4 of inside addresses
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::1",  # Teredo
    "2a00:1450::5efe:7f00:1", "2a00:1450::200:5efe:a9fe:a9fe",  # ISATAP identifiers
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2620:0:1cfe:face:b00c::3", "::ffff:8.8.8.8",
           "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_inside_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["::7f00:2", "64:ff9b::a9fe:a9fe", "::ffff:7f00:1", "2002:7f00:1::"])
async def test_literal_urls_with_embedded_inside_addresses_are_refused(address: str) -> None:
    guard = NetGuard()
    with pytest.raises(UrlNotAllowed) as refused:
        await guard.vet(f"http://[{address}]:8080/hook", param="webhook_url")
    assert refused.value.param == "webhook_url"


async def test_a_name_resolving_to_any_inside_address_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return {"mixed.example": ["8.8.8.8", "64:ff9b::a9fe:a9fe"], "public.example": ["8.8.4.4"]}[host]

    guard = NetGuard(resolver=resolver)
    with pytest.raises(UrlNotAllowed):
        await guard.vet("https://mixed.example/a.wav", param="audio_url")
    target = await guard.vet("https://public.example/a.wav", param="audio_url")
    assert target.address == "8.8.4.4"


async def test_the_allowlist_exempts_networks_and_names() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["10.1.2.3"]

    guard = NetGuard(["10.1.0.0/16", "*.corp.example"], resolver=resolver)
    assert (await guard.vet("http://10.1.9.9/x", param="audio_url")).address == "10.1.9.9"
    assert (await guard.vet("http://media.corp.example/x", param="audio_url")).address == "10.1.2.3"
    with pytest.raises(UrlNotAllowed):
        await NetGuard(resolver=resolver).vet("http://media.corp.example/x", param="audio_url")


@pytest.mark.parametrize("url", [
    "https://d.0.2*", "http://a/b c", "http://ü.example/x", "http://user@example.com/", "ftp://example.com/a",
    "http://example.com:65536/", "http://exa mple.com/", "http://example.com\\@evil/",
])
def test_urls_outside_the_documented_pattern_are_refused(url: str) -> None:
    """Found by the fuzzer: the OpenAPI pattern and the guard must accept exactly the same URLs."""
    assert not re.match(URL_PATTERN, url)
    with pytest.raises(InvalidURL):
        NetGuard().parse(url, param="audio_url")


@pytest.mark.parametrize("url", [
    "https://example.com", "HTTP://a.b-c_d.example:8080/p?q=1#f", "http://[2001:db8::1]:443/x", "http://203.0.113.9/",
])
def test_urls_in_the_documented_pattern_parse(url: str) -> None:
    assert re.match(URL_PATTERN, url)
    NetGuard().parse(url, param="audio_url")
