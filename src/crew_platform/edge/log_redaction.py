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
from typing import Any

from crew_platform.llm.redact import redact
from crew_platform.settings import Settings

LOGGERS = ("uvicorn.error", "uvicorn.access")


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Redacts the arguments one by one, keeping the record's shape: uvicorn's access
        formatter unpacks `args` (client, method, path, version, status)."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg, self.secrets)
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: self._clean(arg) for key, arg in record.args.items()}
        return True

    def _clean(self, value: Any) -> Any:
        """`value`, or its text redacted when that text held a credential (a WebSocket frame
        is an object whose text is the frame)."""
        if value is None or isinstance(value, int | float):
            return value
        text = value if isinstance(value, str) else str(value)
        cleaned = redact(text, self.secrets)
        return value if cleaned == text else cleaned


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
