"""Credentials out of the server's own log lines.

uvicorn's WebSocket layer logs, at LOG_LEVEL=debug, every handshake header (Authorization,
X-API-Key) and every frame (the `{"type": "auth", "token": ...}` message) on `uvicorn.error`;
its access log prints request paths. A filter on those loggers passes each line through
`redact` with the configured secrets: nothing is dropped, the credentials become
`[REDACTED]`. Lines without anything to redact are left as they are. (A logger's filter sees
only what is logged on that very logger: our own modules log no credential at all, which the
tests check without this filter.)
"""

from __future__ import annotations

import logging

from crew_platform.llm.redact import redact
from crew_platform.settings import Settings

LOGGERS = ("uvicorn.error", "uvicorn.access")


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configured_secrets(settings: Settings) -> list[str]:
    values = (
        settings.jwt_secret,
        settings.api_key_secret,
        settings.cerebras_api_key,
        settings.openai_api_key,
    )
    return [value.get_secret_value() for value in values if value is not None]


def install_log_redaction(settings: Settings) -> None:
    """On the loggers above, replacing the filter an earlier app of this process installed."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(old)
        logger.addFilter(RedactingFilter(configured_secrets(settings)))
