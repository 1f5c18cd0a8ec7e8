"""Keys, tokens and clients for the authentication tests: real RSA/EC keys, tokens signed by
PyJWT, API keys made by the service's own code, an in-process WebSocket client (ASGI) and a
JWKS served over loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from crew_platform.devtools.llm_stub import free_port

ISSUER = "https://issuer.test/"
AUDIENCE = "crew-platform-tests"
HS_SECRET = "hs-secret-for-tests-0123456789abcdefghij"
API_KEY_SECRET = "api-key-secret-for-tests-0123456789abcdef"


@functools.cache
def rsa_key(name: str = "main") -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str = "main") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(subject: str = "alice", scopes: str = "read write execute", **extra: Any) -> dict:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": subject,
        "scope": scopes,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    values.update(extra)
    return {k: v for k, v in values.items() if v is not None}


def rs256(payload: dict[str, Any], key: Any = None, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key or rsa_key(), algorithm="RS256", headers=headers)


def unsigned(payload: dict[str, Any]) -> str:
    """`alg: none`: a header, the claims and an empty signature."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def hs_with_public_key(payload: dict[str, Any], public_key_pem: str) -> str:
    """The algorithm-confusion attack: HS256 with the server's RSA public key as the HMAC
    secret (PyJWT refuses to sign with a PEM key, so the token is assembled by hand)."""
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(
        public_key_pem.encode(), f"{header}.{body}".encode(), hashlib.sha256
    ).digest()
    return f"{header}.{body}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwk_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else None
    if algorithm is None:
        entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        entry = json.loads(algorithm.to_jwk(key.public_key()))
    return {**entry, "kid": kid, "use": "sig"}


# -- a JWKS over loopback HTTP ----------------------------------------------------------------


class JwksServer:
    """Serves `document` as JSON at /jwks.json (with `status`: 200, or 503 for an identity
    provider that is down); counts the requests."""

    def __init__(self, document: dict[str, Any], status: int = 200) -> None:
        self.document = document
        self.status = status
        self.requests = 0
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = json.dumps(server.document).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self._http = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


# -- an in-process WebSocket client (ASGI) ---------------------------------------------------


class WebSocketClosed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class AsgiWebSocket:
    """Drives the app's WebSocket endpoint in this event loop, as a server would."""

    def __init__(
        self, app: Any, path: str, headers: dict[str, str], client: str = "127.0.0.1"
    ) -> None:
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "http_version": "1.1",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": (client, 50000),
            "server": ("testserver", 80),
            "subprotocols": [],
            "state": {},
        }
        self._task = asyncio.create_task(app(self.scope, self._to_app.get, self._from_app.put))
        self.accepted = False

    async def _next(self, timeout: float) -> dict[str, Any]:
        get = asyncio.ensure_future(self._from_app.get())
        done, _ = await asyncio.wait(
            {get, self._task}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        if get in done:
            return get.result()
        get.cancel()
        if self._task in done:
            self._task.result()  # raises what the app raised
            raise WebSocketClosed(1006, "the app returned without closing")
        raise TimeoutError("no message from the app")

    async def open(self, timeout: float = 10.0) -> None:
        await self._to_app.put({"type": "websocket.connect"})
        message = await self._next(timeout)
        if message["type"] == "websocket.close":
            raise WebSocketClosed(message.get("code", 1000), message.get("reason", ""))
        assert message["type"] == "websocket.accept", message
        self.accepted = True

    async def send(self, payload: dict[str, Any]) -> None:
        await self._to_app.put({"type": "websocket.receive", "text": json.dumps(payload)})

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        message = await self._next(timeout)
        if message["type"] == "websocket.close":
            raise WebSocketClosed(message.get("code", 1000), message.get("reason", ""))
        assert message["type"] == "websocket.send", message
        return dict(json.loads(message["text"]))

    async def close(self) -> None:
        await self._to_app.put({"type": "websocket.disconnect", "code": 1000})
        try:
            await asyncio.wait_for(self._task, 10)
        except Exception:
            self._task.cancel()


@asynccontextmanager
async def websocket(
    app: Any, path: str = "/ws/", headers: dict[str, str] | None = None, client: str = "127.0.0.1"
) -> AsyncIterator[AsgiWebSocket]:
    ws = AsgiWebSocket(app, path, headers or {}, client)
    try:
        yield ws
    finally:
        await ws.close()
