"""Bearer JWTs, verified with PyJWT.

The algorithms a token may use come from the configured keys, never from the token: JWT_SECRET
allows HS256 only, an RSA key RS256/RS384/RS512, an EC key the ES algorithm of its curve. A
token whose `alg` is `none`, or names an algorithm no configured key has (an RS256 public key
used as an HMAC secret, say), is refused before any verification. The signature is checked
before any claim, so a forged token learns nothing about the claims it would need.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from crew_platform.auth.principal import Principal, parse_scopes
from crew_platform.common.limits import NAME_LENGTH
from crew_platform.errors import ServiceUnavailable, Unauthorized
from crew_platform.llm.redact import redact
from crew_platform.settings import Settings

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = ("HS256",)
RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
EC_ALGORITHMS = {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",)}
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
JWKS_MAX_AGE_SECONDS = 3600.0
"""The key set is fetched again after this long, whatever the tokens ask for."""
JWKS_MIN_REFRESH_SECONDS = 10.0
"""An unknown `kid` fetches the key set again, at most once this often (tokens with made-up
kids must not turn into a flood of requests to the identity provider)."""
VERIFIED_SECONDS = 60.0
"""A token that verified is taken again without verifying it for this long, never past its
`exp` (plus the leeway): clients send the same token with every request, and verifying costs
more than the rest of a simple request (bench scenario 7). A key removed from the JWKS thus
stops tokens already seen within this time."""
VERIFIED_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class VerificationKey:
    key: Any
    """The HMAC secret (bytes) or a `cryptography` public key."""
    algorithms: tuple[str, ...]
    kid: str | None = None


def invalid(reason: str, message: str) -> Unauthorized:
    return Unauthorized(f"Invalid token: {message}", {"reason": reason})


def algorithms_of(key: Any) -> tuple[str, ...]:
    """The algorithms a public key verifies; ValueError for a key type we do not take."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in EC_ALGORITHMS:
        return EC_ALGORITHMS[key.curve.name]
    raise ValueError(f"unsupported public key type {type(key).__name__} (RSA or EC P-256/384/521)")


def load_public_key(value: str) -> VerificationKey:
    """JWT_PUBLIC_KEY: PEM text, or the path of a PEM file. PEM text in an environment
    variable often has its line breaks written `\\n` (one line in a .env file, a container
    platform's secret): those are taken as line breaks."""
    value = value.strip()
    if "-----BEGIN" in value:
        text = value.replace("\\r\\n", "\n").replace("\\n", "\n")
    else:
        text = Path(value).expanduser().read_text()
    key = load_pem_public_key(text.encode())
    return VerificationKey(key, algorithms_of(key))


def _jwk_key(entry: dict[str, Any]) -> VerificationKey | None:
    """A signing key of a JWKS entry; None for what must not verify our tokens: symmetric
    (`oct`) keys, encryption keys, key types we do not take."""
    if entry.get("kty") not in ("RSA", "EC") or entry.get("use") not in (None, "sig"):
        return None
    try:
        key = jwt.PyJWK(entry).key
        algorithms = algorithms_of(key)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:  # InvalidKeyError included
        log.warning("JWKS: skipping key %r: %s", entry.get("kid"), exc)
        return None
    stated = entry.get("alg")
    if isinstance(stated, str) and stated in algorithms:
        algorithms = (stated,)
    kid = entry.get("kid")
    return VerificationKey(key, algorithms, kid if isinstance(kid, str) else None)


def parse_jwks(document: Any) -> list[VerificationKey]:
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("a JWKS is an object with a 'keys' list")
    return [key for entry in entries if isinstance(entry, dict) and (key := _jwk_key(entry))]


async def read_jwks(source: str) -> Any:
    """The JSON document at an http(s) URL, or in a file (a path or a file: URL)."""
    if source.startswith(("http://", "https://")):
        import httpx2

        async with httpx2.AsyncClient(timeout=JWKS_FETCH_TIMEOUT_SECONDS) as client:
            response = await client.get(source, headers={"Accept": "application/json"})
            response.raise_for_status()
            return response.json()
    return json.loads(await asyncio.to_thread(_read_file, source.removeprefix("file://")))


def _read_file(path: str) -> str:
    return Path(path).expanduser().read_text()


class JwksKeys:
    """A key set from JWT_JWKS_URL: fetched on first use, again after JWKS_MAX_AGE_SECONDS, and
    on a `kid` it does not know (at most every `min_refresh_seconds`). A failed fetch keeps
    the keys fetched before, and is logged."""

    def __init__(
        self,
        source: str,
        *,
        min_refresh_seconds: float = JWKS_MIN_REFRESH_SECONDS,
        max_age_seconds: float = JWKS_MAX_AGE_SECONDS,
        fetch: Callable[[str], Awaitable[Any]] = read_jwks,
    ) -> None:
        self.source = source
        self.min_refresh_seconds = min_refresh_seconds
        self.max_age_seconds = max_age_seconds
        self._fetch = fetch
        self._keys: list[VerificationKey] = []
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        self.failing = False
        """Whether the last fetch failed (the keys held may be stale, or none)."""

    async def keys_for(self, kid: str | None) -> list[VerificationKey]:
        if self._fetched_at is None or time.monotonic() - self._fetched_at > self.max_age_seconds:
            await self._refresh()
        found = self._matching(kid)
        if not found and kid is not None:
            await self._refresh()
            found = self._matching(kid)
        return found

    def _matching(self, kid: str | None) -> list[VerificationKey]:
        return [key for key in self._keys if kid is None or key.kid == kid]

    async def _refresh(self) -> None:
        tried_before = self._tried_at
        async with self._lock:
            if self._tried_at != tried_before:
                return  # another request refreshed while this one waited
            now = time.monotonic()
            if self._tried_at is not None and now - self._tried_at < self.min_refresh_seconds:
                return
            self._tried_at = now
            self.fetches += 1
            try:
                self._keys = parse_jwks(await self._fetch(self.source))
                self._fetched_at = now
                self.failing = False
            except Exception as exc:
                self.failing = True
                log.warning(
                    "JWKS %s could not be read (%s): keeping %d key(s) read before",
                    redact(self.source),
                    redact(f"{type(exc).__name__}: {exc}"),
                    len(self._keys),
                )


def _claim_scopes(claims: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            names += value.split()
        elif isinstance(value, list):
            names += [item for item in value if isinstance(item, str)]
    return names


def principal_of(claims: dict[str, Any]) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise invalid("subject", "the token has no subject ('sub')")
    if len(subject) > NAME_LENGTH:
        raise invalid("subject", f"the token's subject is longer than {NAME_LENGTH} characters")
    return Principal(subject, parse_scopes(_claim_scopes(claims)), "jwt")


_CLAIM_ERRORS: Sequence[tuple[type[jwt.PyJWTError], str, str]] = (
    (jwt.ExpiredSignatureError, "expired", "the token has expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "the token is not valid yet (nbf/iat)"),
    (jwt.InvalidIssuerError, "issuer", "the token has the wrong issuer"),
    (jwt.InvalidAudienceError, "audience", "the token is not meant for this server (aud)"),
    (jwt.MissingRequiredClaimError, "missing_claim", "the token lacks a required claim"),
)


class JwtVerifier:
    def __init__(self, settings: Settings, jwks: JwksKeys | None = None) -> None:
        self._static: list[VerificationKey] = []
        if settings.jwt_secret is not None:
            secret = settings.jwt_secret.get_secret_value().encode()
            self._static.append(VerificationKey(secret, HMAC_ALGORITHMS))
        if settings.jwt_public_key:
            self._static.append(load_public_key(settings.jwt_public_key))
        self.jwks = jwks or (JwksKeys(settings.jwt_jwks_url) if settings.jwt_jwks_url else None)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._verified: dict[bytes, tuple[float, Principal]] = {}
        """sha256(token) -> (until when, its principal)."""

    async def verify(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()  # the cache keeps no token
        now = time.time()
        remembered = self._verified.get(digest)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        principal, expires = await self._verify(token)
        if len(self._verified) >= VERIFIED_MAX_ENTRIES:
            self._verified.clear()
        self._verified[digest] = (min(expires + self._leeway, now + VERIFIED_SECONDS), principal)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        """The principal and the token's `exp`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid("malformed", "not a JWT") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm.lower() == "none":
            raise invalid("algorithm", "unsigned tokens (alg none) are refused")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        candidates = await self._candidates(kid)
        keys = [key for key in candidates if algorithm in key.algorithms]
        if not keys:
            if self.jwks is not None and self.jwks.failing:
                raise ServiceUnavailable(
                    "The keys that verify tokens (JWT_JWKS_URL) cannot be read right now; "
                    "try again shortly",
                    {"retry_after": math.ceil(self.jwks.min_refresh_seconds)},
                )
            if self.jwks is not None and kid is not None and len(candidates) == len(self._static):
                raise invalid("unknown_key", "its key id (kid) names none of the signing keys")
            raise invalid("algorithm", f"no configured key verifies {algorithm} tokens")
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=list(key.algorithms),
                    issuer=self._issuer,
                    audience=self._audience,
                    leeway=self._leeway,
                    options={
                        "require": ["exp", "sub"],
                        "verify_aud": self._audience is not None,
                    },
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise self._claim_error(exc) from None
            return principal_of(claims), float(claims["exp"])
        raise invalid("signature", "the signature does not verify")

    async def _candidates(self, kid: str | None) -> list[VerificationKey]:
        if self.jwks is None:
            return self._static
        return [*self._static, *await self.jwks.keys_for(kid)]

    @staticmethod
    def _claim_error(exc: jwt.PyJWTError) -> Unauthorized:
        for kind, reason, message in _CLAIM_ERRORS:
            if isinstance(exc, kind):
                if isinstance(exc, jwt.MissingRequiredClaimError):
                    message = f"the token has no '{exc.claim}' claim"
                return invalid(reason, message)
        return invalid("invalid", "the token could not be verified")
