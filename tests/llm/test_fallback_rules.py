"""MODEL_FALLBACKS as written, the chain a model gets, and a start-up refused over a bad value.

The calls along a chain are tested end to end (the stub answering 404) in
tests/engine/test_model_fallback.py; here is only what needs no model call.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pydantic
import pytest

from crew_platform.llm.fallback import ModelFallbacks, fallback_models_of, parse_model_fallbacks
from crew_platform.settings import Settings


def test_fallbacks_are_parsed_with_spaces_and_the_wildcard() -> None:
    assert parse_model_fallbacks("") == {}
    assert parse_model_fallbacks("  ") == {}
    assert parse_model_fallbacks(
        " llama-4-maverick-17b-128e-instruct = gpt-oss-120b , *=openai:gpt-4o-mini"
    ) == {"llama-4-maverick-17b-128e-instruct": "gpt-oss-120b", "*": "openai:gpt-4o-mini"}


@pytest.mark.parametrize(
    ("value", "fault"),
    [
        ("gpt-oss-120b", "'gpt-oss-120b' is not `model=fallback`"),
        ("a=b,", "'' is not `model=fallback`"),
        ("=b", "'=b' is not"),
        ("a=", "'a=' is not"),
        ("a=b=c", "more than one `=`"),
        ("a=*", "a `*` as the fallback"),
        ("a=b,a=c", "names 'a' a second time"),
        ("a=a", "its own fallback"),
        ("my model=b", "a space"),
        ("a=" + "m" * 201, "longer than 200"),
    ],
)
def test_a_malformed_value_names_the_variable_and_the_entry(value: str, fault: str) -> None:
    with pytest.raises(ValueError, match="MODEL_FALLBACKS") as raised:
        parse_model_fallbacks(value)
    assert fault in str(raised.value)
    with pytest.raises(pydantic.ValidationError, match="MODEL_FALLBACKS"):
        Settings(model_fallbacks=value)


def test_start_up_refuses_a_malformed_value_with_one_clear_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crew_platform.cli", "migrate"],
        env={**os.environ, "MODEL_FALLBACKS": "llama-4-maverick-17b-128e-instruct:gpt-oss-120b"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "crew-platform: invalid configuration:",
        "  MODEL_FALLBACKS entry 'llama-4-maverick-17b-128e-instruct:gpt-oss-120b' is not "
        "`model=fallback` (expected e.g. "
        "`llama-4-maverick-17b-128e-instruct=gpt-oss-120b,*=gpt-oss-120b`)",
    ]


def chain(rules: str, model: str, *fallback_models: str) -> list[str]:
    fallbacks = ModelFallbacks(parse_model_fallbacks(rules), remember_seconds=60)
    return fallbacks.chain(model, fallback_models).models


def test_the_chain_is_agent_fallbacks_then_the_models_entry_then_the_wildcard() -> None:
    rules = "a=x,*=w"
    assert chain(rules, "a", "f1", "f2") == ["a", "f1", "f2", "x", "w"]
    assert chain(rules, "b") == ["b", "w"]
    assert chain("", "a") == ["a"]


def test_entries_chain_on_and_no_model_comes_twice() -> None:
    assert chain("a=b,b=c,c=a,*=b", "a") == ["a", "b", "c"]
    assert chain("*=b,b=c", "a") == ["a", "b", "c"]
    assert chain("a=x,f=y", "a", "f", "a", "x") == ["a", "f", "x", "y"]
    # One model, two spellings (a bare id is Cerebras's).
    assert chain("*=gpt-oss-120b", "cerebras:gpt-oss-120b", "gpt-oss-120b") == [
        "cerebras:gpt-oss-120b"
    ]
    assert chain("cerebras:a=b", "a") == ["a", "b"]


def test_a_missing_model_is_remembered_for_the_configured_time_only() -> None:
    remembering = ModelFallbacks({}, remember_seconds=60)
    remembering.remember_missing("cerebras:gone", "Model 'gone' is not served by cerebras")
    assert remembering.known_missing("gone") == "Model 'gone' is not served by cerebras"
    assert remembering.known_missing("other") is None
    forgetting = ModelFallbacks({}, remember_seconds=0)
    forgetting.remember_missing("gone", "not served")
    assert forgetting.known_missing("gone") is None


def test_stored_agent_configs_of_another_shape_have_no_fallbacks() -> None:
    assert fallback_models_of(None) == ()
    assert fallback_models_of({"fallback_models": "gpt-oss-120b"}) == ()
    assert fallback_models_of({"fallback_models": ["a", 3, " ", "b"]}) == ("a", "b")
