"""Which providers are configured is said at start-up and by /health, never with a key; the
LLM layer knows nothing of HTTP frameworks."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from tests.conftest import make_settings
from tests.flows import running_app

KEY = "csk-health0check1key2value"
OTHER_KEY = "sk-other0provider1key2value"


def missing_key_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "CEREBRAS_API_KEY" in r.getMessage()
    ]


async def test_health_says_which_providers_are_configured_never_the_keys(
    database_url: str, stub: StubServer
) -> None:
    settings = make_settings(database_url, stub, cerebras_api_key=KEY)
    async with running_app(settings) as (_, client):
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "providers": {
            "cerebras": {"configured": True, "base_url": stub.base_url},
            "openai": {"configured": False, "base_url": None},
        },
    }
    assert KEY not in response.text


async def test_health_hides_keys_and_credentials_in_base_urls(database_url: str) -> None:
    settings = make_settings(
        database_url,
        None,
        openai_api_key=OTHER_KEY,
        openai_base_url="https://proxy-user:proxy-password@127.0.0.1:9/v1",
    )
    async with running_app(settings) as (_, client):
        response = await client.get("/health")
    providers = response.json()["providers"]
    assert providers["cerebras"]["configured"] is False
    assert providers["openai"] == {
        "configured": True,
        "base_url": "https://[REDACTED]@127.0.0.1:9/v1",
    }
    assert OTHER_KEY not in response.text and "proxy-password" not in response.text


async def test_an_empty_key_is_not_configured(database_url: str) -> None:
    settings = make_settings(database_url, None, cerebras_api_key="")
    async with running_app(settings) as (_, client):
        health = (await client.get("/health")).json()
    assert health["providers"]["cerebras"]["configured"] is False


async def test_start_up_without_a_key_warns_once_naming_cerebras_api_key(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crew_platform")
    async with running_app(make_settings(database_url, None)):
        pass
    (warning,) = missing_key_warnings(caplog)
    assert "CEREBRAS_BASE_URL" in warning  # how to point at another OpenAI-compatible server
    assert "\n" not in warning


async def test_start_up_with_a_key_does_not_warn(
    database_url: str, stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crew_platform")
    async with running_app(make_settings(database_url, stub)):
        pass
    assert missing_key_warnings(caplog) == []


async def test_only_an_openai_key_is_enough_not_to_warn(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crew_platform")
    async with running_app(make_settings(database_url, None, openai_api_key=OTHER_KEY)):
        pass
    assert missing_key_warnings(caplog) == []


def test_settings_never_show_the_keys() -> None:
    settings = Settings(cerebras_api_key=KEY, openai_api_key=OTHER_KEY)
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert KEY not in shown and OTHER_KEY not in shown
    assert settings.cerebras_api_key is not None
    assert settings.cerebras_api_key.get_secret_value() == KEY


def test_the_llm_package_imports_no_web_framework() -> None:
    script = """
import importlib, json, pkgutil, sys
import crew_platform.llm as llm
for module in pkgutil.iter_modules(llm.__path__):
    importlib.import_module(f"crew_platform.llm.{module.name}")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette"))))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []
