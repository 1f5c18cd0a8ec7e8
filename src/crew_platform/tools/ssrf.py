"""Server-side request forgery guard: tools reach only public addresses.

A host is resolved first and every address it resolves to is checked, so `localhost`, a name
pointing at 127.0.0.1 and numeric spellings (`2130706433`, `0x7f000001`, `127.1`: the system
resolver reads them as the connection would) are all refused. `TOOLS_ALLOWED_NETWORKS` lets
chosen networks through (a local MCP server, the tests' own HTTP server).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

from crew_platform.tools.base import ToolError

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
AllowedNetworks = str | Iterable[IPNetwork]

METADATA_ADDRESSES = frozenset(
    ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
NAT64_PREFIX = ip_network("64:ff9b::/96")
DEFAULT_PORTS = {"http": 80, "https": 443}


class AddressRefused(ToolError):
    """The target resolves to an address tools may not reach."""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`TOOLS_ALLOWED_NETWORKS`: comma-separated CIDRs (a bare address is a /32 or /128).
    Raises ValueError naming the entry that is not one."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not a network in CIDR notation") from exc
    return tuple(networks)


def _networks(allowed: AllowedNetworks) -> tuple[IPNetwork, ...]:
    return parse_networks(allowed) if isinstance(allowed, str) else tuple(allowed)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64): it is the one reached."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why tools may not reach `address` (None for a public address)."""
    if isinstance(address, IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return refusal_reason(inner)
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata address"),
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def address_problem(address: IPAddress, allowed: AllowedNetworks) -> str | None:
    """Why `address` is refused, unless it lies inside an allowed network."""
    reason = refusal_reason(address)
    if reason is None:
        return None
    candidates = [address]
    if isinstance(address, IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
        candidates.append(inner)
    networks = _networks(allowed)
    if any(candidate in network for candidate in candidates for network in networks):
        return None
    return reason


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host` (numeric spellings included)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolError(f"cannot resolve host {host!r}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ToolError(f"cannot resolve host {host!r}")
    return addresses


async def checked_address(host: str, port: int, allowed: AllowedNetworks) -> IPAddress:
    """The address to connect to for `host`: refused when any address it resolves to is."""
    addresses = await resolve(host, port)
    for address in addresses:
        problem = address_problem(address, allowed)
        if problem is not None:
            shown = host if host == str(address) else f"{host} ({address})"
            raise AddressRefused(
                f"refused to connect to {shown}: {problem} (allow it with TOOLS_ALLOWED_NETWORKS)"
            )
    return addresses[0]


def split_url(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL; ToolError for anything else."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ToolError(f"invalid URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ToolError(f"only http and https URLs can be fetched, not {url!r}")
    if not host:
        raise ToolError(f"URL {url!r} has no host")
    return scheme, host, port or DEFAULT_PORTS[scheme]


async def check_url(url: str, allowed_networks: AllowedNetworks) -> None:
    """Raise `ToolError` unless `url` is http(s) and its host resolves only to reachable
    addresses (public ones, or inside `allowed_networks`)."""
    _, host, port = split_url(url)
    await checked_address(host, port, allowed_networks)
