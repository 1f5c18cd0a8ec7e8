"""Take credentials out of text a provider sent us, before it is stored, logged or answered.

A provider may echo the key it was sent ("Incorrect API key provided: sk-abc1****xyz9"), or
anything else from the request. `redact` replaces with `[REDACTED]`:

- the configured keys' own values (those of at least `MIN_SECRET_LENGTH` characters: a shorter
  value is no real key, and replacing it everywhere would mangle the message);
- provider-style keys: `sk-...` (OpenAI, also `sk-proj-...`), `csk-...` (Cerebras), `gsk_...`
  (Groq), `xai-...`, with at least 6 key characters after the prefix (masked `*` included);
- the credential after `Bearer` or `Basic` (an echoed Authorization header);
- a long token (16+ characters mixing letters and digits) right after a word such as `key`,
  `api_key`, `token`, `secret`, `password` or `authorization`, with `:`, `=` or `is` between;
- the user-info part of a URL (`https://user:password@host`);
- JSON Web Tokens (`eyJ...` header, payload and signature) and this platform's API keys
  (`crew_<id>_<secret>`), wherever they appear (the server's own logs use `redact` too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8

_TOKEN = r"[A-Za-z0-9._~+/=\-*]"
_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"(?<![A-Za-z0-9])(?:sk|csk|gsk|xai)[-_][A-Za-z0-9_\-*]{6,}",
        rf"(?i)(?P<keep>\b(?:bearer|basic) +){_TOKEN}+",
        r"(?i)(?P<keep>(?<![A-Za-z0-9])(?:(?:api[_-]?)?key|token|secret|password|authorization)"
        r"[\"']?\s*(?:[:=]|\bis\b)\s*[\"']?)"
        r"(?=[A-Za-z0-9._~+/\-]*[0-9])(?=[A-Za-z0-9._~+/\-]*[A-Za-z])[A-Za-z0-9._~+/\-]{16,}",
        r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
        r"\beyJ[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-.]+",
        r"(?<![A-Za-z0-9])crew_[0-9a-f]{8,}_[A-Za-z0-9_\-.]+",
    )
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secret values and without anything shaped like a credential."""
    long_enough = {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH}
    for secret in sorted(long_enough, key=len, reverse=True):  # a key inside another: longest first
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return text


def _replacement(match: re.Match[str]) -> str:
    """Keep the words that introduced a token (`Bearer `, `api_key=`), replace only the token."""
    keep = match.groupdict().get("keep") or ""
    return keep + REDACTED
