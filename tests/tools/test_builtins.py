"""Each built-in tool, called directly; fetch_url and web_search against a local server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from crew_platform.settings import Settings
from crew_platform.tools.base import ToolError
from crew_platform.tools.builtins import current_time, fetch_url, web_search
from crew_platform.tools.calculator import calculate
from tests.tools.conftest import LocalSite


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2+3*4", "14"),
        ("(2+3)*4", "20"),
        ("0.1+0.2", "0.3"),
        ("2.5*4", "10"),
        ("10/4", "2.5"),
        ("-3+1", "-2"),
        ("-(2**2)", "-4"),
        ("+7", "7"),
        ("17 % 5", "2"),
        ("2**10", "1024"),
        ("2**-1", "0.5"),
        ("10**30", "1" + "0" * 30),
    ],
)
def test_calculator(expression: str, value: str) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("9**9**9", "too large"),
        ("2**100000", "too large"),
        ("10.0**400", "too large"),
        ("(-8)**0.5", "not a real number"),
        ("2+", "malformed"),
        ("", "malformed"),
        ("1" * 600, "longer than"),
        ("x + 1", "Name is not allowed"),
        ("abs(-1)", "Call is not allowed"),
        ("(1).real", "Attribute is not allowed"),
        ("__import__('os').system('true')", "not allowed"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("1 < 2", "Compare is not allowed"),
        ("[1, 2]", "List is not allowed"),
    ],
)
def test_calculator_refuses(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        calculate(expression)


def test_current_time_is_utc_by_default() -> None:
    value = datetime.fromisoformat(current_time())
    assert value.utcoffset() == timedelta(0)
    assert abs(value - datetime.now(UTC)) < timedelta(minutes=5)


def test_current_time_in_a_time_zone() -> None:
    value = datetime.fromisoformat(current_time("Asia/Kolkata"))
    assert value.utcoffset() == timedelta(hours=5, minutes=30)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "Europe/"])
def test_current_time_with_a_bad_zone(zone: str) -> None:
    with pytest.raises(ToolError, match="unknown time zone"):
        current_time(zone)


PAGE = """<html><head><title>Tea</title><style>p { color: red }</style>
<script>var secret = "do not show";</script></head>
<body><h1>Green tea</h1><p>Steep at 80&deg;C &amp; wait.</p><ul><li>one</li><li>two</li></ul>
<noscript>enable js</noscript></body></html>"""


async def test_fetch_url_reduces_html_to_text(site: LocalSite, tool_settings: Settings) -> None:
    url = site.route("/tea", PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
    text = await fetch_url(url, tool_settings)
    assert text.splitlines()[0] == "Tea"
    assert "Green tea" in text and "Steep at 80°C & wait." in text
    assert "one\n" in text and "two" in text
    assert "secret" not in text and "color" not in text and "enable js" not in text
    assert "<" not in text


async def test_fetch_url_returns_plain_text_and_json(
    site: LocalSite, tool_settings: Settings
) -> None:
    data = json.dumps({"a": 1})
    url = site.route("/data", data, headers={"Content-Type": "application/json"})
    assert await fetch_url(url, tool_settings) == data


async def test_fetch_url_refuses_binary_content(site: LocalSite, tool_settings: Settings) -> None:
    url = site.route("/pic", b"\x89PNG", headers={"Content-Type": "image/png"})
    with pytest.raises(ToolError, match="image/png"):
        await fetch_url(url, tool_settings)


async def test_fetch_url_reads_at_most_the_byte_bound(
    site: LocalSite, tool_settings: Settings
) -> None:
    url = site.route("/big", "a" * 50_000 + "THE END")
    settings = tool_settings.model_copy(update={"tool_fetch_max_bytes": 1000})
    text = await fetch_url(url, settings)
    assert text.startswith("a" * 1000)
    assert "THE END" not in text
    assert "truncated: only the first 1000 bytes read" in text


async def test_fetch_url_follows_redirects(site: LocalSite, tool_settings: Settings) -> None:
    target = site.route("/target", "arrived")
    site.route("/hop", status=302, headers={"Location": "/middle"})
    site.route("/middle", status=301, headers={"Location": target})
    assert await fetch_url(site.url("/hop"), tool_settings) == "arrived"


async def test_fetch_url_refuses_a_redirect_to_a_refused_address(
    site: LocalSite, tool_settings: Settings
) -> None:
    metadata = "http://169.254.169.254/latest/meta-data/"
    url = site.route("/go", status=302, headers={"Location": metadata})
    with pytest.raises(ToolError, match=r"169\.254\.169\.254.*metadata"):
        await fetch_url(url, tool_settings)


async def test_fetch_url_refuses_a_redirect_to_loopback_outside_the_allow_list(
    site: LocalSite, tool_settings: Settings
) -> None:
    """The site is allowed as 127.0.0.1 only; a hop to another loopback address is refused
    and never reached."""
    hidden = f"http://127.0.0.2:{site.port}/admin"
    url = site.route("/go", status=307, headers={"Location": hidden})
    with pytest.raises(ToolError, match=r"127\.0\.0\.2.*loopback"):
        await fetch_url(url, tool_settings)
    assert site.paths() == ["/go"]


async def test_fetch_url_refuses_loopback_without_the_allow_list(
    site: LocalSite, tool_settings: Settings
) -> None:
    url = site.route("/private", "internal")
    strict = tool_settings.model_copy(update={"tools_allowed_networks": ""})
    for spelling in (url, site.url("/private", host="localhost")):
        with pytest.raises(ToolError, match="loopback"):
            await fetch_url(spelling, strict)
    assert site.received == []


async def test_fetch_url_reports_http_errors(site: LocalSite, tool_settings: Settings) -> None:
    with pytest.raises(ToolError, match="HTTP 404"):
        await fetch_url(site.url("/missing"), tool_settings)


SEARCH_RESULTS = {
    "query": "green tea",
    "results": [
        {"title": f"Result {n}", "url": f"https://example.com/{n}", "content": f"snippet {n}"}
        for n in range(1, 9)
    ],
}


async def test_web_search_asks_searxng_for_json(site: LocalSite, tool_settings: Settings) -> None:
    site.route("/search", json.dumps(SEARCH_RESULTS), headers={"Content-Type": "application/json"})
    settings = tool_settings.model_copy(update={"web_search_url": site.url("/")})
    text = await web_search("green tea", settings, max_results=2)
    assert text == (
        "1. Result 1\nhttps://example.com/1\nsnippet 1\n\n"
        "2. Result 2\nhttps://example.com/2\nsnippet 2"
    )
    assert site.received[0].query == {"q": ["green tea"], "format": ["json"]}
    assert (await web_search("green tea", settings)).count("https://example.com/") == 5


async def test_web_search_reports_a_broken_provider(
    site: LocalSite, tool_settings: Settings
) -> None:
    site.route("/search", "<html>not json</html>", headers={"Content-Type": "text/html"})
    settings = tool_settings.model_copy(update={"web_search_url": site.url("")})
    with pytest.raises(ToolError, match="web search failed"):
        await web_search("tea", settings)


async def test_web_search_unset_names_the_variable(tool_settings: Settings) -> None:
    with pytest.raises(ToolError, match="WEB_SEARCH_URL"):
        await web_search("tea", tool_settings.model_copy(update={"web_search_url": None}))
