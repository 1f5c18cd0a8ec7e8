"""Scenario 8: the cost of authentication per request.

`GET /api/v1/agents/{id}` on one SQLite database, served by three `crew-platform serve`
processes side by side: AUTH_MODE=none; AUTH_MODE=jwt (HS256 secret, RSA public key, API keys
cached API_KEY_CACHE_SECONDS=5); AUTH_MODE=api_key with API_KEY_CACHE_SECONDS=0 (the key's
row read on every request). Variants are interleaved run by run, so a change in the machine's
load hits them alike. Four measures: the server process's CPU time per request over a run of
sequential requests on one keep-alive connection (the least disturbed by other work on a shared
machine: its difference to `none` is the cost of authentication); the median latency of those
requests; requests/s with 32 connections at once; and `Authenticator.authenticate` alone,
in-process (no HTTP, no routing), for a token seen for the first time and for one seen before.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench import s3_throughput
from bench.common import Context, Server, cpu_seconds, fmt, median, sqlite_url
from bench.report import ScenarioResult, Table

CREATE_KEY = ["api-key", "create", "--name", "bench", "--scopes", "read"]
SECRET = secrets.token_urlsafe(32)
KEY_SECRET = secrets.token_urlsafe(32)


@dataclass
class Variant:
    label: str
    server: str
    headers: dict[str, str]


def _rsa_pair() -> tuple[Any, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


def _token(key: Any, algorithm: str, jti: int = 0) -> str:
    import jwt

    claims = {"sub": "bench", "scope": "read", "exp": int(time.time()) + 3600, "jti": str(jti)}
    return jwt.encode(claims, key, algorithm=algorithm)


def _api_key(database_url: str, ctx: Context) -> str:
    env = {"DATABASE_URL": database_url, "API_KEY_SECRET": KEY_SECRET, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "crew_platform.cli", *CREATE_KEY],
        env=env,
        cwd=ctx.workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"api-key create failed: {done.stderr[-1000:]}")
    return done.stdout.strip()


def _sequential(server: Server, url: str, headers: dict[str, str], n: int) -> tuple[float, float]:
    """(median latency ms, server CPU µs per request) of `n` requests one after the other on
    one keep-alive connection."""
    latencies = []
    with httpx.Client(headers=headers, timeout=30) as client:
        client.get(url).raise_for_status()
        cpu_before = cpu_seconds(server.pid)
        for _ in range(n):
            began = time.perf_counter()
            response = client.get(url)
            latencies.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
        cpu = cpu_seconds(server.pid) - cpu_before
    return median(latencies) * 1000, cpu / n * 1e6


async def _authenticate_us(settings: Any, credentials: list[str], n: int) -> float:
    """Median microseconds of one `authenticate` call, in-process, cycling through
    `credentials` (n different tokens: each verified for the first time)."""
    from crew_platform.auth.authenticator import Authenticator
    from crew_platform.db import create_engine
    from crew_platform.reads import create_reads

    engine = create_engine(settings)
    reads = create_reads(settings, engine)
    try:
        authenticator = Authenticator(settings, reads)
        await authenticator.authenticate(credentials[-1])
        timings = []
        for i in range(n):
            credential = credentials[i % len(credentials)]
            began = time.perf_counter()
            await authenticator.authenticate(credential)
            timings.append(time.perf_counter() - began)
        return median(timings) * 1e6
    finally:
        await reads.close()
        await engine.dispose()


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(8, "auth", "Cost of authentication per request")
    sequential_n = 30 if ctx.smoke else 1500
    reps = 1 if ctx.smoke else (ctx.reps or 5)
    load_seconds = 1 if ctx.smoke else 5
    in_process_n = 50 if ctx.smoke else 5000
    url = sqlite_url(ctx.workdir, "s8")
    private_key, public_pem = _rsa_pair()
    hs_token, rs_token = _token(SECRET, "HS256"), _token(private_key, "RS256")
    key = _api_key(url, ctx)
    jwt_env = {
        "AUTH_MODE": "jwt",
        "JWT_SECRET": SECRET,
        "JWT_PUBLIC_KEY": public_pem,
        "API_KEY_SECRET": KEY_SECRET,
        "RATE_LIMIT_AUTH_FAILURES": "off",
    }
    envs = {
        "none": {"AUTH_MODE": "none"},
        "jwt": jwt_env,
        "api_key, no cache": {
            "AUTH_MODE": "api_key",
            "API_KEY_SECRET": KEY_SECRET,
            "API_KEY_CACHE_SECONDS": "0",
            "RATE_LIMIT_AUTH_FAILURES": "off",
        },
    }
    variants = [
        Variant("no authentication (AUTH_MODE=none)", "none", {}),
        Variant("JWT HS256", "jwt", {"Authorization": f"Bearer {hs_token}"}),
        Variant("JWT RS256 (2048-bit key)", "jwt", {"Authorization": f"Bearer {rs_token}"}),
        Variant("API key, cached 5 s", "jwt", {"X-API-Key": key}),
        Variant("API key, row read per request", "api_key, no cache", {"X-API-Key": key}),
    ]
    wrk = s3_throughput.find_wrk(ctx)
    sequential: dict[str, list[float]] = {v.label: [] for v in variants}
    cpu: dict[str, list[float]] = {v.label: [] for v in variants}
    throughput: dict[str, list[float]] = {v.label: [] for v in variants}
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for name, env in envs.items():
            server = Server(url, ctx.stub, ctx.workdir, extra_env=env).start(probe="/health")
            stack.callback(server.stop)
            servers[name] = server
        with httpx.Client(base_url=servers["none"].base_url, timeout=30) as http:
            created = http.post("/api/v1/agents/", json={"name": "s8", "role": "r", "goal": "g"})
            created.raise_for_status()
            agent_id = created.json()["id"]
        # Each server imports the model SDK in a thread just after start-up, and its first
        # requests compile and cache: measured only once that is over.
        time.sleep(0 if ctx.smoke else 3)
        for variant in variants:
            target = f"{servers[variant.server].base_url}/api/v1/agents/{agent_id}"
            _sequential(servers[variant.server], target, variant.headers, 20 if ctx.smoke else 300)
        for rep in range(reps):
            for variant in variants:
                target = f"{servers[variant.server].base_url}/api/v1/agents/{agent_id}"
                ctx.log(f"s8 rep {rep + 1}/{reps}: {variant.label}")
                latency, cpu_us = _sequential(
                    servers[variant.server], target, variant.headers, sequential_n
                )
                sequential[variant.label].append(latency)
                cpu[variant.label].append(cpu_us)
                got = (
                    s3_throughput.run_wrk(wrk, target, load_seconds, ctx, False, variant.headers)
                    if wrk
                    else s3_throughput.run_httpx(target, load_seconds, False, variant.headers)
                )
                if got["errors"]:
                    raise RuntimeError(f"{variant.label}: {got['errors']} failed requests")
                throughput[variant.label].append(got["rps"])

    from crew_platform.settings import Settings

    def settings(**values: Any) -> Settings:
        return Settings(database_url=url, api_key_secret=KEY_SECRET, **values)

    fresh = max(in_process_n // 10, 10)
    hs_fresh = [_token(SECRET, "HS256", i) for i in range(fresh)]
    rs_fresh = [_token(private_key, "RS256", i) for i in range(fresh)]
    in_process: list[tuple[str, Callable[[], Settings], list[str], int]] = [
        ("JWT HS256, each token new", lambda: settings(auth_mode="jwt", jwt_secret=SECRET),
         hs_fresh, fresh),
        ("JWT HS256, token seen before", lambda: settings(auth_mode="jwt", jwt_secret=SECRET),
         [hs_token], in_process_n),
        ("JWT RS256, each token new",
         lambda: settings(auth_mode="jwt", jwt_public_key=public_pem), rs_fresh, fresh),
        ("JWT RS256, token seen before",
         lambda: settings(auth_mode="jwt", jwt_public_key=public_pem), [rs_token], in_process_n),
        ("API key, cached", lambda: settings(auth_mode="api_key"), [key], in_process_n),
        (
            "API key, row read per call",
            lambda: settings(auth_mode="api_key", api_key_cache_seconds=0),
            [key],
            in_process_n,
        ),
    ]  # fmt: skip
    micro = {
        label: asyncio.run(_authenticate_us(make(), credentials, n))
        for label, make, credentials, n in in_process
    }

    base_cpu = median(cpu[variants[0].label])
    base_ms = median(sequential[variants[0].label])
    base_rps = median(throughput[variants[0].label])
    rows = []
    for variant in variants:
        cpu_us = median(cpu[variant.label])
        ms, rps = median(sequential[variant.label]), median(throughput[variant.label])
        rows.append(
            [
                variant.label,
                fmt(cpu_us, 0),
                f"{cpu_us / base_cpu:.2f}x",
                f"{cpu_us - base_cpu:+.0f}",
                fmt(ms, 3),
                f"{ms / base_ms:.2f}x",
                fmt(rps, 0),
                f"{rps / base_rps:.2f}x",
            ]
        )
    tool = "wrk" if wrk else "the httpx load generator (bench/loadgen.py)"
    result.notes.append(
        f"GET /api/v1/agents/{{id}} on SQLite, three server processes (one per configuration) "
        f"on one database. Sequential: {sequential_n} requests on one keep-alive connection: "
        f"the server process's CPU time per request (/proc, user + system) and the median "
        f"latency; concurrent: {tool}, 32 connections, {load_seconds} s. Medians of "
        f"{reps} interleaved run(s); ratios against AUTH_MODE=none; `auth µs` = CPU per "
        "request minus that of AUTH_MODE=none. The same token is sent with every request, as "
        "clients do: a verified JWT is remembered up to 60 s (never past its exp)."
    )
    result.tables.append(
        Table(
            "Per request, over HTTP",
            [
                "credential",
                "server CPU µs/request",
                "vs none",
                "auth µs",
                "latency ms",
                "vs none",
                "requests/s (32 conn.)",
                "vs none",
            ],
            rows,
        )
    )
    result.tables.append(
        Table(
            "`Authenticator.authenticate` alone, in-process (median of "
            f"{in_process_n} calls; {fresh} for new tokens)",
            ["credential", "µs per call"],
            [[label, fmt(value, 1)] for label, value in micro.items()],
        )
    )
    result.raw = {
        "sequential_ms": sequential,
        "server_cpu_us_per_request": cpu,
        "throughput_rps": throughput,
        "authenticate_us": micro,
        "tool": tool,
    }
    return result
