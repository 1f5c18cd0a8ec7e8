"""API keys: `crew_<key_id>_<secret>`, stored as an HMAC-SHA256 under API_KEY_SECRET.

`key_id` (public, unique) finds the row in one indexed read; the HMAC of the whole presented
key is compared with the stored one in constant time. A key is 256 random bits, so a fast
keyed hash is enough (a slow password hash would cost every request and protect nothing a
random key needs); the server secret keeps a copied table from being checked offline.
A looked-up key is kept API_KEY_CACHE_SECONDS: a revocation takes effect within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.auth.principal import Principal, Scope, parse_scopes
from crew_platform.common.limits import NAME_LENGTH
from crew_platform.db import utcnow
from crew_platform.errors import Conflict, Unauthorized, ValidationFailed
from crew_platform.models import ApiKey
from crew_platform.reads import Reads
from crew_platform.settings import Settings

PREFIX = "crew_"
KEY_SHAPE = re.compile(r"crew_([0-9a-f]{16})_([A-Za-z0-9_\-]{43})")
CACHE_MAX_ENTRIES = 10_000


def looks_like_api_key(credential: str) -> bool:
    """API keys and JWTs share the bearer header; an API key starts with `crew_`."""
    return credential.startswith(PREFIX)


def new_key() -> tuple[str, str]:
    """(key_id, the whole key)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(server_secret: str, key: str) -> str:
    return hmac.new(server_secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def invalid_key(reason: str = "invalid", message: str = "Invalid API key") -> Unauthorized:
    return Unauthorized(message, {"reason": reason})


@dataclass(frozen=True)
class StoredKey:
    key_hash: str
    subject: str
    scopes: frozenset[Scope]
    revoked: bool


_BY_KEY_ID = select(ApiKey.key_hash, ApiKey.subject, ApiKey.scopes, ApiKey.revoked_at).where(
    ApiKey.key_id == bindparam("key_id")
)


class ApiKeyVerifier:
    def __init__(self, settings: Settings, reads: Reads) -> None:
        secret = settings.api_key_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        self._reads = reads
        self._ttl = settings.api_key_cache_seconds
        self._cache: dict[str, tuple[float, StoredKey]] = {}

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    async def verify(self, key: str) -> Principal:
        if self._secret is None:
            raise invalid_key("disabled", "API keys are not enabled on this server")
        shape = KEY_SHAPE.fullmatch(key)
        if shape is None:
            raise invalid_key("malformed", "Invalid API key: not the shape of one")
        stored = await self._stored(shape.group(1))
        if stored is None or not hmac.compare_digest(stored.key_hash, key_hash(self._secret, key)):
            raise invalid_key()
        if stored.revoked:
            raise invalid_key("revoked", "API key revoked")
        return Principal(stored.subject, stored.scopes, "api_key")

    async def _stored(self, key_id: str) -> StoredKey | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await self._reads.run(
            lambda connection: connection.execute(_BY_KEY_ID, {"key_id": key_id}).first()
        )
        if row is None:
            return None  # unknown ids are not cached: made-up ones must not fill the cache
        stored = StoredKey(
            row.key_hash, row.subject, parse_scopes(row.scopes or []), row.revoked_at is not None
        )
        if self._ttl > 0:
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[key_id] = (now + self._ttl, stored)
        return stored


# -- management (`crew-platform api-key ...`) ------------------------------------------------


def parse_scope_list(value: str) -> list[str]:
    names = [part.strip() for part in value.replace(" ", ",").split(",") if part.strip()]
    unknown = sorted({name for name in names if name not in {s.value for s in Scope}})
    if unknown or not names:
        raise ValidationFailed.field(
            "scopes",
            f"give one or more of {', '.join(s.value for s in Scope)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
        )
    return [scope.value for scope in Scope if scope.value in names]


@dataclass(frozen=True)
class CreatedKey:
    name: str
    subject: str
    scopes: list[str]
    key: str
    """Shown once, never stored."""


async def create_key(
    session: AsyncSession,
    settings: Settings,
    *,
    name: str,
    scopes: Sequence[str],
    subject: str | None = None,
) -> CreatedKey:
    if settings.api_key_secret is None:
        raise ValidationFailed(
            "API_KEY_SECRET is not set: keys are stored as HMACs under it (use the same value "
            "as the server)"
        )
    name = name.strip()
    subject = (subject or name).strip()
    for field, value in (("name", name), ("subject", subject)):
        if not value or len(value) > NAME_LENGTH:
            raise ValidationFailed.field(field, f"1 to {NAME_LENGTH} characters")
    if await session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise Conflict(f"An API key named {name!r} already exists", {"name": name})
    key_id, key = new_key()
    session.add(
        ApiKey(
            name=name,
            key_id=key_id,
            key_hash=key_hash(settings.api_key_secret.get_secret_value(), key),
            subject=subject,
            scopes=list(scopes),
        )
    )
    await session.commit()
    return CreatedKey(name, subject, list(scopes), key)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    key_id: str
    subject: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


async def list_keys(session: AsyncSession) -> list[KeyInfo]:
    rows = await session.scalars(select(ApiKey).order_by(ApiKey.id))
    return [
        KeyInfo(r.name, r.key_id, r.subject, list(r.scopes or []), r.created_at, r.revoked_at)
        for r in rows
    ]


async def revoke_key(session: AsyncSession, name: str) -> bool:
    """Whether a key of that name was active (and is revoked now)."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    await session.commit()
    return bool(getattr(result, "rowcount", 0))
