"""The filter on uvicorn's loggers: credentials become [REDACTED], the records keep their
shape (uvicorn's access formatter unpacks their arguments)."""

from __future__ import annotations

import logging

from uvicorn.logging import AccessFormatter

from crew_platform.edge.log_redaction import RedactingFilter
from crew_platform.llm.redact import REDACTED

SECRET = "server-secret-0123456789abcdefghijklmnop"
KEY = "crew_0123456789abcdef_" + "A1b2C3d4" * 5 + "xyz"


class Frame:
    """Stands for a websockets frame: an object whose text is the frame."""

    def __str__(self) -> str:
        return f'TEXT \'{{"type": "auth", "token": "{KEY}"}}\' [80 bytes]'


def record(msg: str, args: object) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)


def test_access_line_keeps_its_arguments() -> None:
    line = record(
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/api/v1/tools/x?api_key={KEY}&n=1", "1.1", 200),
    )
    assert RedactingFilter([SECRET]).filter(line)
    text = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(line)
    assert KEY not in text and REDACTED in text and "200" in text and "n=1" in text


def test_frames_headers_and_configured_secrets() -> None:
    cases = [
        record("< %s", (Frame(),)),
        record("< authorization: Bearer %s", ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig",)),
        record("< x-api-key: %s", (KEY,)),
        record(f"configured {SECRET} here", ()),
        record("%(who)s sent %(what)s", {"who": "client", "what": KEY}),
    ]
    for line in cases:
        assert RedactingFilter([SECRET]).filter(line)
        message = line.getMessage()
        assert KEY not in message and SECRET not in message and "eyJzdWIi" not in message
        assert REDACTED in message


def test_lines_without_credentials_are_untouched() -> None:
    frame_args = (Frame,)
    plain = record("%s %d %s", ("connection open", 3, frame_args))
    RedactingFilter([SECRET]).filter(plain)
    assert plain.args == ("connection open", 3, frame_args)
