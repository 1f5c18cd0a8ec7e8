"""`/docs` and `/redoc` work with no internet: every asset comes from our own server.

Proven in a real headless Chromium (Debian's `chromium`, driven by Playwright) with every request
to another host blocked, and over plain HTTP: the pages reference only local URLs, each of which
answers with the right content type, cacheable and outside the rate limit.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from playwright.sync_api import Browser, Page, Request, Response, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from crew_platform.app import create_app
from crew_platform.devtools.llm_stub import StubServer
from tests.api import live_env
from tests.conftest import make_settings, require_service
from tests.support import LiveServer, live_server

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
PAGES = ("/docs", "/redoc")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RENDER_TIMEOUT_MS = 60_000
"""A cap, not a measure: Chromium parses 1.5 MB of Swagger UI on a busy 2-core machine."""

ABSOLUTE_URL = re.compile(r"[a-z]+://[^\s'\"<>]+|\"//[^\s'\"<>]+")
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: StubServer) -> Iterator[LiveServer]:
    database = tmp_path_factory.mktemp("docs") / "crew.db"
    with live_server(live_env(f"sqlite+aiosqlite:///{database}", stub)) as running:
        yield running


class _References(HTMLParser):
    """Every URL a page makes the browser fetch: src= and href= attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def referenced_urls(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and url.startswith("/")


@pytest.mark.parametrize("page", PAGES)
def test_page_references_only_local_assets_that_are_served(server: LiveServer, page: str) -> None:
    response = httpx.get(server.base_url + page)
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    assert "default-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert not ABSOLUTE_URL.findall(html), f"{page} names other hosts"
    urls = referenced_urls(html)
    assert any(".js" in url for url in urls)
    assert any("favicon" in url for url in urls)
    for url in urls:
        assert _is_local(url), f"{page} references {url}"
        asset = httpx.get(urljoin(server.base_url, url))
        assert asset.status_code == 200, url
        suffix = Path(urlsplit(url).path).suffix
        assert asset.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], url
        assert "max-age" in asset.headers["cache-control"], url
        if suffix == ".css":
            imports = re.findall(r"@import|url\(\s*(?!['\"]?data:)[^)]*\)", asset.text)
            assert not imports, f"{url} loads more: {imports}"


def test_oauth2_redirect_page_is_served(server: LiveServer) -> None:
    response = httpx.get(server.base_url + "/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "oauth2" in response.text
    assert not ABSOLUTE_URL.findall(response.text)


def test_docs_routes_stay_out_of_the_schema(server: LiveServer) -> None:
    paths = httpx.get(server.base_url + "/openapi.json").json()["paths"]
    assert "/api/v1/agents/" in paths
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    database = tmp_path / "crew.db"
    database.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{database}"


@pytest.fixture
async def limited_client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(sqlite_url, rate_limit_api="2/minute"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_pages_and_assets_are_exempt_from_the_rate_limit(
    limited_client: httpx.AsyncClient,
) -> None:
    codes = [(await limited_client.get("/api/v1/agents/")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    for page in PAGES:
        html = (await limited_client.get(page)).text
        for url in [page, "/docs/oauth2-redirect", *referenced_urls(html)]:
            response = await limited_client.get(url)
            assert response.status_code == 200, url
            assert "x-ratelimit-limit" not in response.headers, url


@dataclass
class Traffic:
    """What the browser asked for. `sent`: requests to another host that reached the network
    (where the route handler aborts them); `refused`: ones the page's Content-Security-Policy
    stopped inside the browser; `failed`: local requests that failed or answered an error."""

    sent: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def route(self, route: Route) -> None:
        if _is_local_host(route.request.url):
            route.continue_()
        else:
            self.sent.append(route.request.url)
            route.abort("blockedbyclient")

    def on_response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")

    def on_request_failed(self, request: Request) -> None:
        if _is_local_host(request.url):
            self.failed.append(f"{request.failure} {request.url}")
        elif request.failure == "csp":
            self.refused.append(request.url)

    def report(self) -> str:
        return (
            f"requests to other hosts: {self.sent}; failed local requests: {self.failed}; "
            f"refused by the page's policy: {self.refused}"
        )


def _is_local_host(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or parts.hostname in LOCAL_HOSTS


def chromium_executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    require_service(
        "Chromium", None if executable else "no chromium on PATH; `make test` installs it as root"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def open_offline(browser: Browser, url: str) -> tuple[Page, Traffic]:
    traffic = Traffic()
    context = browser.new_context()
    context.route("**/*", traffic.route)
    page = context.new_page()
    page.on("response", traffic.on_response)
    page.on("requestfailed", traffic.on_request_failed)
    page.goto(url)
    return page, traffic


def wait_rendered(page: Page, selector: str, text: str, traffic: Traffic) -> None:
    try:
        page.locator(selector, has_text=text).first.wait_for(timeout=RENDER_TIMEOUT_MS)
    except PlaywrightTimeout:
        pytest.fail(f"{page.url}: no {selector} with {text!r} rendered; {traffic.report()}")
    page.wait_for_load_state("networkidle")


def test_swagger_ui_renders_the_operations_offline(browser: Browser, server: LiveServer) -> None:
    page, traffic = open_offline(browser, server.base_url + "/docs")
    try:
        wait_rendered(page, ".opblock", "/api/v1/agents/", traffic)
        assert page.locator(".opblock").count() > 10
        assert not traffic.sent and not traffic.failed, traffic.report()
    finally:
        page.context.close()


def test_redoc_renders_the_operations_offline(browser: Browser, server: LiveServer) -> None:
    page, traffic = open_offline(browser, server.base_url + "/redoc")
    try:
        wait_rendered(page, "[data-section-id^='operation/'] h2", "Get all agents", traffic)
        assert page.locator("[data-section-id^='operation/']").count() > 10
        assert not traffic.sent and not traffic.failed, traffic.report()
    finally:
        page.context.close()
