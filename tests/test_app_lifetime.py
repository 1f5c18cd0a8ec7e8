"""An app that was served and shut down is freed: nothing global (a framework's endpoint cache,
a module-level router) keeps it. A process that builds many apps (this test suite) otherwise
keeps every one of them, and its garbage collections grow slower with each."""

from __future__ import annotations

import gc
import weakref

import httpx
from asgi_lifespan import LifespanManager

from crew_platform.app import create_app
from crew_platform.settings import Settings


async def test_an_app_is_freed_after_it_was_served(settings: Settings) -> None:
    async def serve_once() -> weakref.ref[object]:
        app = create_app(settings)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for path in ("/health", "/docs", "/redoc", "/api/v1/agents/"):
                    assert (await client.get(path)).status_code == 200, path
        return weakref.ref(app)

    gone = await serve_once()
    gc.collect()
    assert gone() is None, [type(r).__qualname__ for r in gc.get_referrers(gone())]
