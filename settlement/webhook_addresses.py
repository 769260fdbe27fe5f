"""Where a webhook may go: public addresses only, checked when the URL is registered and again at
every connection (SSRF).

A partner chooses its webhook URL, and the exchange then connects to it from inside its own
network, POSTing events signed with its key. So an address is accepted only if it is plainly a
partner's public server:

- ``https`` (``http`` only with ``EXCHANGE_WEBHOOK_ALLOW_HTTP``, development), no credentials;
- port 443 or 8443 (``EXCHANGE_WEBHOOK_PORTS``), so an internal service on another port (a
  database on 5432, an admin port) cannot be reached;
- the host is resolved, and every address it resolves to must be global unicast: loopback,
  private, link-local (169.254.169.254 and cloud metadata), unique-local, shared, multicast,
  reserved and unspecified addresses are refused, IPv4-mapped IPv6 included, whatever spelling
  the URL uses (``2130706433``, ``0x7f000001``, ``0177.0.0.1`` are 127.0.0.1). A host that does
  not resolve is refused too.

The check runs again at each delivery, and the sender connects to the address it checked (the
name kept for ``Host`` and TLS), so a DNS answer that changes after the check (rebinding) cannot
move a delivery onto an internal address. ``EXCHANGE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES`` lifts the
address rule, for a development receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from exchange.errors import InvalidInput
from exchange.settings import Settings

MAX_URL_LENGTH = 2000

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: how a webhook's host is resolved (injectable, for tests)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(InvalidInput):
    """A webhook URL the exchange will not connect to."""


@dataclass(frozen=True)
class WebhookPolicy:
    allow_http: bool = False
    allow_private_addresses: bool = False
    ports: frozenset[int] = frozenset({443, 8443})
    """The ports a URL may use; empty: any."""

    @classmethod
    def of(cls, settings: Settings) -> WebhookPolicy:
        return cls(
            settings.webhook_allow_http,
            settings.webhook_allow_private_addresses,
            frozenset(settings.webhook_ports),
        )


PRODUCTION = WebhookPolicy()


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the address to connect to."""

    url: str
    host: str
    port: int
    address: IPAddress


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


def check_url_form(url: object, policy: WebhookPolicy) -> tuple[str, str, int]:
    """``(url, host, port)`` of a well-formed webhook URL the policy allows, before resolution."""
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL_LENGTH or url != url.strip():
        raise AddressRefused(f"webhook_url must be 1 to {MAX_URL_LENGTH} characters", field="url")
    if not url.isprintable() or " " in url:
        raise AddressRefused("webhook_url must be printable, with no spaces", field="url")
    parts = urlsplit(url)
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise AddressRefused(f"webhook_url must use {' or '.join(schemes)}", field="url")
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise AddressRefused("webhook_url needs a host and no credentials or fragment", field="url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise AddressRefused("webhook_url has an invalid port", field="url") from None
    if policy.ports and port not in policy.ports:
        allowed = ", ".join(str(p) for p in sorted(policy.ports))
        raise AddressRefused(f"webhook_url must use port {allowed}", field="url")
    return url, parts.hostname, port


def _literal(host: str) -> IPAddress | None:
    """``host`` as an address if it is one in any spelling a resolver accepts (inet_aton's
    decimal, octal and hexadecimal forms included), else ``None``."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_public(address: IPAddress) -> bool:
    """Global unicast: none of loopback, private, link-local, unique-local, shared, multicast,
    reserved or unspecified (an IPv4-mapped or 6to4 address is judged by its IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
    )


async def checked_target(
    url: object, policy: WebhookPolicy, resolve: Resolver = resolve_host
) -> Target:
    """The webhook URL with the address to connect to, or :class:`AddressRefused`: the form,
    then every address the host resolves to (all must be public; the first is used)."""
    url, host, port = check_url_form(url, policy)
    literal = _literal(host.strip("[]"))
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            found = await resolve(host, port)
        except (OSError, UnicodeError):
            found = []
        addresses = [a for a in (_literal(f.split("%", 1)[0]) for f in found) if a is not None]
        if not addresses:
            raise AddressRefused(f"webhook host {host!r} does not resolve", field="url")
    if not policy.allow_private_addresses:
        refused = [str(a) for a in addresses if not is_public(a)]
        if refused:
            raise AddressRefused(
                f"webhook host {host!r} is not a public address ({', '.join(refused)})", field="url"
            )
    return Target(url, host, port, addresses[0])
