"""The SSRF guard: a callback URL may only reach a public address, unless its host is
allow-listed (``api.callback_allow_hosts``).

:func:`check_callback_url` runs at submission. Delivery calls :func:`resolve_target` again:
the host is resolved once, *every* address it resolves to is checked, and the connection is
then made to that checked address (the ``Host`` header and TLS server name carry the host
name), so a DNS answer that changes between the check and the connect (DNS rebinding) cannot
steer the request inside. Redirects are never followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, ClassVar
from urllib.parse import urlsplit

#: The longest callback URL accepted.
MAX_URL_LENGTH = 2048
_NAT64 = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")
_SHARED = IPv4Network("100.64.0.0/10")

#: ``getaddrinfo``'s shape; injectable for tests.
Resolver = Callable[..., Sequence[tuple[Any, ...]]]


class BadCallbackUrl(ValueError):
    """A callback URL that may not be used; ``reason`` says why (``scheme``, ``credentials``,
    ``host``, ``port``, ``too_long``, ``blocked_address``, ``unresolvable``). The message never
    repeats the URL (it may carry a token)."""

    code: ClassVar[str] = "bad_callback_url"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unresolvable(BadCallbackUrl):
    """The host did not resolve (at delivery this is transient and retried)."""

    def __init__(self) -> None:
        super().__init__("unresolvable", "the callback host does not resolve")


@dataclass(frozen=True)
class Target:
    """Where one delivery connects: ``address`` (checked), with ``host`` as the ``Host`` header
    and TLS server name. ``target`` is the request target (path and query)."""

    scheme: str
    host: str
    port: int
    target: str
    address: str

    @property
    def host_header(self) -> str:
        """The ``Host`` header value (the port only when not the scheme's default)."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def blocked(ip: IPv4Address | IPv6Address) -> bool:
    """True for an address a callback may not reach: private, loopback, link-local, shared
    (CGNAT), reserved, multicast, unspecified, documentation — also when an IPv6 address embeds
    one (IPv4-mapped, NAT64, 6to4, Teredo)."""
    if isinstance(ip, IPv6Address):
        embedded: list[IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip in _NAT64:
            embedded.append(IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _NAT64_LOCAL:
            return True
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if any(blocked(v4) for v4 in embedded):
            return True
    elif ip in _SHARED:
        return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _allowed(host: str, allow_hosts: Collection[str]) -> bool:
    return host in {h.strip().lower().rstrip(".").strip("[]") for h in allow_hosts if h.strip()}


def parse(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, target)`` of a well-formed http(s) URL without credentials;
    raises :class:`BadCallbackUrl` otherwise (nothing is resolved)."""
    if not isinstance(url, str) or not url.strip():
        raise BadCallbackUrl("host", "the callback URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise BadCallbackUrl("too_long", f"the callback URL is over {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url.strip()):
        raise BadCallbackUrl("host", "the callback URL holds spaces or control characters")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadCallbackUrl("scheme", "the callback URL must be http or https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise BadCallbackUrl("credentials", "the callback URL may not carry credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise BadCallbackUrl("host", "the callback URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise BadCallbackUrl("port", "the callback URL has an invalid port") from None
    if port == 0:
        raise BadCallbackUrl("port", "the callback URL has an invalid port")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return scheme, host, port, target


def resolve_target(
    url: str, allow_hosts: Collection[str] = (), *, resolver: Resolver = socket.getaddrinfo
) -> Target:
    """Check ``url`` and resolve its host once: every address must be public, unless the host
    is allow-listed; the :class:`Target` is pinned to the first address. Raises
    :class:`BadCallbackUrl` (``reason`` ``blocked_address`` when an address is refused) or
    :class:`Unresolvable`."""
    scheme, host, port, target = parse(url)
    try:
        infos = resolver(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Unresolvable() from None
    addresses: list[IPv4Address | IPv6Address] = []
    for info in infos:
        try:
            addresses.append(ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            raise Unresolvable() from None
    if not addresses:
        raise Unresolvable()
    if not _allowed(host.lower(), allow_hosts) and any(blocked(a) for a in addresses):
        raise BadCallbackUrl(
            "blocked_address",
            "the callback host resolves to a private, loopback, link-local or reserved address",
        )
    return Target(scheme, host, port, target, str(addresses[0]))


def check_callback_url(
    url: str, allow_hosts: Collection[str] = (), *, resolver: Resolver = socket.getaddrinfo
) -> str:
    """``url`` (stripped) when it may be used as a callback: http(s), no credentials, and a
    host whose every address is public unless the host is in ``allow_hosts``. Raises
    :class:`BadCallbackUrl` (``code`` ``bad_callback_url``) otherwise. Delivery checks again."""
    resolve_target(url, allow_hosts, resolver=resolver)
    return url.strip()
