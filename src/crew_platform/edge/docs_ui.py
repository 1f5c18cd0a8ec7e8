"""`/docs` (Swagger UI) and `/redoc` with every asset served by us, so they work offline.

FastAPI's own pages load their scripts, styles and favicon from CDNs (and ReDoc its fonts from
Google); a self-hosted install without internet then shows blank pages. The assets come from
the `fastapi-offline` package's static folder, served as files (nothing is read at start-up).
Its FastAPI subclass is not used: the pages are FastAPI's own HTML with local URLs.

The asset URLs carry the package version, so browsers may keep them for a year: an upgrade of
the package changes the URLs. The assets live under `/docs`, which the rate limit exempts.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/static"
ASSETS_PACKAGE = "fastapi-offline"

PAGE_CACHE_CONTROL = "public, max-age=600"
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "worker-src 'self' blob:",
    )
)
"""The pages may fetch from our own origin only: ReDoc's bundle shows the Redocly logo from
cdn.redoc.ly, which the browser then never asks for. Inline code is the pages' own."""

SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
"""Swagger UI's validator badge would send the spec to validator.swagger.io."""


def assets_directory() -> Path:
    """The package's static folder, found without importing the package (its FastAPI subclass)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{ASSETS_PACKAGE} is not installed: /docs and /redoc need its assets")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@functools.cache
def _assets_version() -> str:
    return importlib.metadata.version(ASSETS_PACKAGE)


def _asset_url(request: Request, name: str) -> str:
    return f"{_root_path(request)}{ASSETS_URL}/{name}?v={_assets_version()}"


def _root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


class CachedStaticFiles(StaticFiles):
    """StaticFiles (ETag, Last-Modified, 304s) plus a Cache-Control header."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = ASSET_CACHE_CONTROL
        return response


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Cache-Control"] = PAGE_CACHE_CONTROL
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def install_docs(app: FastAPI) -> None:
    """Serve the docs pages and their assets; `app` must be built with docs_url/redoc_url None."""
    if app.openapi_url is None:
        return
    swagger_ui_parameters = {**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})}

    # The pages read the app from the request: a closure over it would keep every app ever
    # built alive (frameworks cache endpoints by identity), which tests building hundreds of
    # apps pay for in memory and garbage-collection time.
    async def swagger_ui(request: Request) -> HTMLResponse:
        app = request.app
        root = _root_path(request)
        return _page(
            get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=_asset_url(request, "swagger-ui-bundle.js"),
                swagger_css_url=_asset_url(request, "swagger-ui.css"),
                swagger_favicon_url=_asset_url(request, "favicon.png"),
                oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=swagger_ui_parameters,
            )
        )

    async def swagger_ui_oauth2_redirect(request: Request) -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    async def redoc(request: Request) -> HTMLResponse:
        app = request.app
        return _page(
            get_redoc_html(
                openapi_url=f"{_root_path(request)}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=_asset_url(request, "redoc.standalone.js"),
                redoc_favicon_url=_asset_url(request, "favicon.png"),
                with_google_fonts=False,
            )
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, swagger_ui_oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)
    app.mount(
        ASSETS_URL, CachedStaticFiles(directory=os.fspath(assets_directory())), name="docs-assets"
    )
