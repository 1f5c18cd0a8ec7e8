"""One credential in, a principal out (or `Unauthorized`): API keys in every mode but `none`,
JWTs too in mode `jwt`."""

from __future__ import annotations

from crew_platform.auth.api_keys import ApiKeyVerifier, invalid_key, looks_like_api_key
from crew_platform.auth.jwt_tokens import JwtVerifier
from crew_platform.auth.principal import Principal
from crew_platform.reads import Reads
from crew_platform.settings import Settings


class Authenticator:
    def __init__(self, settings: Settings, reads: Reads) -> None:
        self.api_keys = ApiKeyVerifier(settings, reads)
        self.jwt = JwtVerifier(settings) if settings.auth_mode == "jwt" else None

    async def authenticate(self, credential: str) -> Principal:
        if looks_like_api_key(credential):
            return await self.api_keys.verify(credential)
        if self.jwt is None:
            raise invalid_key(
                "malformed",
                "Invalid credential: not an API key (crew_...); this server takes API keys only "
                "(AUTH_MODE=api_key)",
            )
        return await self.jwt.verify(credential)
