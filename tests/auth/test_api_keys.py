"""API keys through `crew-platform api-key` as an operator runs it, and what the server does
with them: only an HMAC stored, the key shown once, revocation within API_KEY_CACHE_SECONDS,
mode `api_key` (JWTs refused there)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from crew_platform import cli as cli_module
from crew_platform.app import create_app
from crew_platform.auth.api_keys import parse_scope_list, revoke_key
from crew_platform.cli import main
from crew_platform.devtools.llm_stub import StubServer
from crew_platform.errors import ValidationFailed
from crew_platform.settings import get_settings
from tests.api import assert_error
from tests.auth.conftest import api_key, auth_settings, client_of, token_of
from tests.auth.support import API_KEY_SECRET


def cli(database_url: str, *args: str, secret: str | None = API_KEY_SECRET) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "API_KEY"))}
    env["DATABASE_URL"] = database_url
    if secret is not None:
        env["API_KEY_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "crew_platform.cli", "api-key", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def stored(database_url: str) -> list[Any]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text("SELECT * FROM api_keys ORDER BY id"))
            return [row._asdict() for row in result]
    finally:
        await engine.dispose()


async def test_cli_creates_lists_and_revokes_and_stores_only_an_hmac(
    database_url: str,
    stub: StubServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`create` and `revoke` as processes of their own, as an operator runs them while the
    server serves; `list` and the refusals in this process."""
    created = cli(database_url, "create", "--name", "ci", "--scopes", "read,execute")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("crew_") and len(key.splitlines()) == 1
    assert key not in created.stderr and "shown only now" in created.stderr
    (row,) = await stored(database_url)
    assert key not in str(row)
    expected = hmac.new(API_KEY_SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()
    assert row["key_hash"] == expected
    assert row["key_id"] in key and row["subject"] == "ci"
    assert row["scopes"] in (["read", "execute"], '["read", "execute"]')

    assert run_cli(monkeypatch, database_url, "list", secret=None) == 0
    listed = capsys.readouterr().out
    assert "ci\t" in listed and "read,execute" in listed
    assert key not in listed and row["key_hash"] not in listed

    app = create_app(auth_settings(database_url, stub, auth_mode="api_key"))
    async with LifespanManager(app), client_of(app) as http:
        ok = await http.get("/api/v1/agents/", headers={"X-API-Key": key})
        assert ok.status_code == 200, ok.text
        assert await http.get("/api/v1/agents/", headers={"Authorization": f"Bearer {key}"})
        refused = await http.post(
            "/api/v1/agents/", json={"name": "a", "role": "r", "goal": "g"},
            headers={"X-API-Key": key},
        )  # fmt: skip
        assert_error(refused, 403, "FORBIDDEN")
        jwt_refused = await http.get("/api/v1/agents/", headers=token_of("alice"))
        assert assert_error(jwt_refused, 401)["details"]["reason"] == "malformed"

        revoked = cli(database_url, "revoke", "ci", secret=None)
        assert revoked.returncode == 0, revoked.stderr
        after = await http.get("/api/v1/agents/", headers={"X-API-Key": key})
        assert assert_error(after, 401, "UNAUTHORIZED")["details"]["reason"] == "revoked"
    assert run_cli(monkeypatch, database_url, "revoke", "ci", secret=None) == 1
    assert run_cli(monkeypatch, database_url, "revoke", "nobody", secret=None) == 1


def run_cli(
    monkeypatch: pytest.MonkeyPatch, database_url: str, *args: str, secret: str | None
) -> int:
    """`crew-platform api-key ...` in this process (quicker than a process per refusal)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    if secret is None:
        monkeypatch.delenv("API_KEY_SECRET", raising=False)
    else:
        monkeypatch.setenv("API_KEY_SECRET", secret)
    monkeypatch.setattr(cli_module, "configure_logging", lambda level: None)
    get_settings.cache_clear()
    try:
        with ThreadPoolExecutor(1) as thread:  # main() runs its own event loop
            return thread.submit(main, ["api-key", *args]).result()
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_refusals(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(*args: str, secret: str | None = API_KEY_SECRET, code: int = 1) -> str:
        assert run_cli(monkeypatch, database_url, *args, secret=secret) == code
        captured = capsys.readouterr()
        assert captured.out == ""  # no key printed
        return captured.err

    assert "API_KEY_SECRET" in refused("create", "--name", "x", "--scopes", "read", secret=None)
    assert "root" in refused("create", "--name", "x", "--scopes", "read,root")
    assert run_cli(monkeypatch, database_url, "create", "--name", "x", "--scopes", "admin",
                   secret=API_KEY_SECRET) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("crew_")
    assert "already exists" in refused("create", "--name", "x", "--scopes", "read")
    short = refused("create", "--name", "y", "--scopes", "read", secret="short", code=2)
    assert "API_KEY_SECRET" in short and "short" not in short.replace("API_KEY_SECRET", "")
    assert "no active key" in refused("revoke", "nobody")
    assert len(asyncio.run(stored(database_url))) == 1


async def test_a_key_under_another_server_secret_is_refused(
    database_url: str, stub: StubServer
) -> None:
    other = "another-api-key-secret-0123456789abcdef"
    app = create_app(auth_settings(database_url, stub, auth_mode="api_key", api_key_secret=other))
    async with LifespanManager(app), client_of(app) as http:
        made_elsewhere = create_app(auth_settings(database_url, stub, auth_mode="api_key"))
        async with LifespanManager(made_elsewhere):
            key = await api_key(made_elsewhere, "ci", ["read"])
        refused = await http.get("/api/v1/agents/", headers={"X-API-Key": key})
        assert assert_error(refused, 401)["details"]["reason"] == "invalid"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_revocation_takes_effect_within_the_cache_time(
    database_url: str, stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A looked-up key is trusted API_KEY_CACHE_SECONDS (time is moved, not waited for)."""
    from crew_platform.auth import api_keys

    app = create_app(auth_settings(database_url, stub, api_key_cache_seconds=5))
    now = [1000.0]
    monkeypatch.setattr(api_keys.time, "monotonic", lambda: now[0])
    async with LifespanManager(app), client_of(app) as http:
        headers = {"X-API-Key": await api_key(app, "ci", ["read"])}
        assert (await http.get("/api/v1/agents/", headers=headers)).status_code == 200
        async with app.state.sessionmaker() as session:
            assert await revoke_key(session, "ci")
        now[0] += 4.0
        assert (await http.get("/api/v1/agents/", headers=headers)).status_code == 200
        now[0] += 1.5
        assert (await http.get("/api/v1/agents/", headers=headers)).status_code == 401


def test_scope_lists() -> None:
    assert parse_scope_list("execute, read") == ["read", "execute"]
    assert parse_scope_list("admin") == ["admin"]
    for bad in ("", ",", "read,superuser"):
        with pytest.raises(ValidationFailed):
            parse_scope_list(bad)


async def test_httpx_client_sees_the_key_only_in_its_own_request(
    database_url: str, stub: StubServer
) -> None:
    """The key is never echoed: not in a refusal, not in the agent it creates."""
    app = create_app(auth_settings(database_url, stub, auth_mode="api_key"))
    async with LifespanManager(app), client_of(app) as http:
        key = await api_key(app, "w", ["write", "read"])
        created = await http.post(
            "/api/v1/agents/", json={"name": "a", "role": "r", "goal": "g"},
            headers={"X-API-Key": key},
        )  # fmt: skip
        assert created.status_code == 201 and created.json()["created_by"] == "w"
        for response in (created, await http.get("/api/v1/agents/", headers={"X-API-Key": key})):
            assert key not in response.text and API_KEY_SECRET not in response.text
