"""What `redact` takes out of a provider's text, and what it leaves alone."""

from __future__ import annotations

import pytest

from crew_platform.llm.redact import REDACTED, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Incorrect API key provided: sk-abc123def456ghi789.", "sk-abc123def456ghi789"),
        ("Incorrect API key provided: sk-abc12*************xyz9", "sk-abc12*************xyz9"),
        ("project key sk-proj-Ab3_dE-f9GhIj rejected", "sk-proj-Ab3_dE-f9GhIj"),
        ("Cerebras key csk-4f9k2m3n5p6q7r8s is invalid", "csk-4f9k2m3n5p6q7r8s"),
        ("got header Authorization: Bearer abc.DEF-ghi_123", "abc.DEF-ghi_123"),
        ("Basic dXNlcjpwYXNzd29yZA== was refused", "dXNlcjpwYXNzd29yZA=="),
        ("request had api_key=AbCdEf0123456789xyz set", "AbCdEf0123456789xyz"),
        ('{"token": "a1b2c3d4e5f6g7h8i9"}', "a1b2c3d4e5f6g7h8i9"),
        ("the secret is 9f8e7d6c5b4a39281706", "9f8e7d6c5b4a39281706"),
        ("could not reach https://admin:hunter2@llm.internal/v1", "admin:hunter2"),
        ("frame eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl seen", "eyJzdWIiOiJhIn0"),
        ("truncated eyJhbGciOiJIUzI1NiIs...Jfp7r9-iRqlVbne1eu5RM]", "Jfp7r9-iRqlVbne1eu5RM"),
        ("x-api-key: crew_d0759f668bbc88c7_za2sal_xC0UnZUFlrgLtzhtr", "za2sal_xC0UnZUFlrgLtzhtr"),
    ],
)
def test_key_shaped_tokens_are_redacted(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted


def test_the_words_around_a_token_are_kept() -> None:
    assert redact("Incorrect API key provided: sk-abc123def456ghi789. See docs") == (
        f"Incorrect API key provided: {REDACTED}. See docs"
    )
    assert redact("Authorization: Bearer abcdef") == f"Authorization: Bearer {REDACTED}"
    assert redact("api_key=AbCdEf0123456789xyz;") == f"api_key={REDACTED};"


def test_configured_secrets_are_redacted_wherever_they_appear() -> None:
    text = "bad request for account plainsecretvalue (plainsecretvalue-2 too)"
    assert redact(text, ["plainsecretvalue"]) == (
        f"bad request for account {REDACTED} ({REDACTED}-2 too)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "Model gpt-oss-120b does not exist or you do not have access to it.",
        "the key is short",
        "the token: thisisalongwordwithoutdigits",
        "scikit sk-learn is a library",
        "Could not connect to cerebras at http://127.0.0.1:9/v1",
        "rate limit exceeded: 429 Too Many Requests",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text, ["k", "short"]) == text  # too short to be a key: not replaced
