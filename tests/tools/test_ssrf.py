"""The SSRF guard. Private, link-local and metadata ranges are checked by the address check
alone: nothing here sends traffic anywhere (check_url only resolves names)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import httpx2
import pydantic
import pytest

from crew_platform.settings import Settings
from crew_platform.tools.base import ToolError
from crew_platform.tools.ssrf import (
    address_problem,
    check_url,
    parse_networks,
    refusal_reason,
    resolve,
)
from crew_platform.tools.transport import GuardedTransport

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST:8080/x",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "https://127.0.0.1:8443/",
]


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
async def test_every_spelling_of_this_machine_is_refused(url: str) -> None:
    with pytest.raises(ToolError, match=r"refused.*TOOLS_ALLOWED_NETWORKS"):
        await check_url(url, "")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("2002:7f00:1::", "loopback"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a public address"),
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    problem = refusal_reason(ip_address(address))
    assert problem is not None and reason in problem


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ip_address(address)) is None


def test_allowed_networks_let_an_address_through() -> None:
    allowed = parse_networks("10.0.0.0/8, 127.0.0.1")
    assert address_problem(ip_address("10.9.8.7"), allowed) is None
    assert address_problem(ip_address("127.0.0.1"), allowed) is None
    assert address_problem(ip_address("::ffff:127.0.0.1"), allowed) is None
    assert address_problem(ip_address("127.0.0.2"), allowed) == "a loopback address"
    assert address_problem(ip_address("192.168.0.1"), "10.0.0.0/8") == "a private address"


async def test_check_url_accepts_an_allowed_loopback() -> None:
    await check_url("http://localhost:9/", "127.0.0.0/8, ::1/128")
    await check_url("http://[::1]:9/", "::1/128")


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/", "gopher://x/", "http:///x"]
)
async def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(ToolError):
        await check_url(url, "")


async def test_unresolvable_names_are_a_tool_error() -> None:
    with pytest.raises(ToolError, match="cannot resolve"):
        await check_url("http://no-such-host.invalid/", "")


def test_a_bad_allowed_network_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks("127.0.0.0/8,10.0.0.0/33")
    with pytest.raises(pydantic.ValidationError, match="not-a-network"):
        Settings(tools_allowed_networks="not-a-network")


async def test_the_transport_connects_to_the_address_it_checked() -> None:
    """The request leaves for the checked address; Host and TLS SNI keep the name."""
    seen: list[httpx2.Request] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200)

    addresses = await resolve("localhost", 8443)
    allowed = [ip_network(address) for address in addresses]
    transport = GuardedTransport(allowed, inner=httpx2.MockTransport(record))
    async with httpx2.AsyncClient(transport=transport) as client:
        await client.get("https://localhost:8443/path?q=1")
        with pytest.raises(ToolError, match="loopback"):
            await client.get("http://127.0.0.2/")
    [request] = seen
    assert request.url.host == str(addresses[0])
    assert (request.url.port, request.url.path, request.url.query) == (8443, "/path", b"q=1")
    assert request.headers["Host"] == "localhost:8443"
    assert request.extensions["sni_hostname"] == "localhost"
