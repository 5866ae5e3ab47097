"""The SSRF guard on callback URLs: scheme, credentials, and every resolved address."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Any

import pytest

from worker.webhooks import BadCallbackUrl, check_callback_url
from worker.webhooks.guard import Unresolvable, blocked, resolve_target


def fake_dns(*addresses: str) -> Any:
    """A resolver answering ``addresses`` for any host (getaddrinfo's shape)."""

    def resolve(host: str, port: int, *_: Any) -> Sequence[tuple[Any, ...]]:
        out = []
        for a in addresses:
            family = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append((family, socket.SOCK_STREAM, 6, "", (a, port)))
        return out

    return resolve


PUBLIC = fake_dns("93.184.216.34")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://hooks.example.com/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://token@hooks.example.com/x", "credentials"),
        ("https:///path-only", "host"),
        ("https://hooks.example.com:99999/", "port"),
        ("https://hooks.example.com/a b", "host"),
        ("https://hooks.example.com/\r\nX-Injected: 1", "host"),
        ("https://hooks.example.com/" + "a" * 2100, "too_long"),
        ("", "host"),
    ],
)
def test_malformed_or_credentialed_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(BadCallbackUrl) as info:
        check_callback_url(url, resolver=PUBLIC)
    assert info.value.reason == reason
    assert info.value.code == "bad_callback_url"
    assert "example" not in str(info.value)  # the message never repeats the URL


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata (link-local)
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::",
    ],
)
def test_private_loopback_link_local_and_mapped_addresses_are_refused(address: str) -> None:
    assert blocked(ip_address(address))
    with pytest.raises(BadCallbackUrl) as info:
        check_callback_url("https://hooks.example.com/cb", resolver=fake_dns(address))
    assert info.value.reason == "blocked_address"


def test_public_addresses_pass() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert not blocked(ip_address(address)), address
    url = "https://hooks.example.com/cb?x=1"
    assert check_callback_url(f"  {url} ", resolver=PUBLIC) == url


def test_every_resolved_address_is_checked_not_only_the_first() -> None:
    with pytest.raises(BadCallbackUrl):
        check_callback_url("https://h.example.com/", resolver=fake_dns("93.184.216.34", "10.0.0.5"))


def test_ip_literals_and_real_resolution_of_localhost_are_refused() -> None:
    for url in (
        "http://127.0.0.1:8080/x",
        "http://[::1]/x",
        "http://[::ffff:7f00:1]/x",
        "http://localhost/x",
        "http://2130706433/x",  # 127.0.0.1 as one decimal number
    ):
        with pytest.raises(BadCallbackUrl) as info:
            check_callback_url(url)  # the system resolver
        assert info.value.reason == "blocked_address", url


def test_an_allow_listed_host_may_resolve_anywhere() -> None:
    assert check_callback_url("http://127.0.0.1:9/x", ["127.0.0.1"])
    assert check_callback_url("http://LocalHost./x", ["localhost"])
    target = resolve_target(
        "http://hooks.internal:8081/cb?a=1", [" hooks.internal "], resolver=fake_dns("10.0.0.7")
    )
    assert (target.address, target.host_header, target.target) == (
        "10.0.0.7",
        "hooks.internal:8081",
        "/cb?a=1",
    )
    # the allow list names hosts, not addresses they happen to resolve to
    with pytest.raises(BadCallbackUrl):
        check_callback_url("http://other.internal/x", ["10.0.0.7"], resolver=fake_dns("10.0.0.7"))


def test_an_unresolvable_host_is_refused() -> None:
    def nxdomain(*_: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(Unresolvable) as info:
        check_callback_url("https://nowhere.invalid/", resolver=nxdomain)
    assert info.value.code == "bad_callback_url" and info.value.reason == "unresolvable"
