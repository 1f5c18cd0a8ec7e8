"""Reusable pydantic field types for the API schemas."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
)

from crew_platform.common.limits import (
    LONG_TEXT_LENGTH,
    MAX_ID,
    MAX_JSON_DEPTH,
    NAME_LENGTH,
    REQUIRED_TEXT_LENGTH,
    TASK_TYPE_LENGTH,
)

_DECIMAL_TEXT = r"^\s*-?\d+(\.\d+)?\s*$"
_DECIMAL_RE = re.compile(_DECIMAL_TEXT)


def _strip_nonempty(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty or blank")
    return stripped


def _number_from_text(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number or a numeric string, not a boolean")
    if isinstance(value, str):
        if not _DECIMAL_RE.match(value):
            raise ValueError('must be a number or a decimal string such as "0.6"')
        return float(value.strip())
    return value


def _format_number(value: float) -> str:
    """Plain decimal notation, shortest round-trip digits: 0.6 -> "0.6", 1e-05 -> "0.00001"."""
    text = format(Decimal(repr(float(value))), "f")
    return text if "." in text else text + ".0"


def unstorable(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a decoded JSON value cannot be stored or echoed faithfully, or None if it can.

    PostgreSQL refuses NUL characters in text and JSONB, no UTF-8 encoder takes unpaired
    surrogates, JSON has no NaN or Infinity (Python's parser accepts them anyway), and a value
    nested deeper than `max_depth` objects and arrays could be stored but not serialized back.
    Walked with an explicit stack: no input depth can exhaust the interpreter's.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL (\\u0000) characters"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "must not contain unpaired surrogate characters"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "must not contain NaN or Infinity"
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                return f"must not nest objects and arrays more than {max_depth} levels deep"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


PLAIN_FLOAT_LIMIT = 1e16
"""From this magnitude on, a float is written with an exponent and no fraction (`1e+16`), and
PostgreSQL's JSONB, which keeps numbers as exact decimals, hands it back as an integer."""


def as_stored(value: Any) -> Any:
    """A decoded, storable JSON value as the database will hand it back, on either backend.

    JSONB keeps a number's exact decimal value but not its spelling: `-1.2e+259` comes back as
    the integer `-12000...0` (which Python reads as an int unequal to the float) and `-0.0` as
    `0.0`. Such floats become those same numbers here, so the answer to a write is what every
    later read returns, and SQLite stores them alike. Only call it on a value `unstorable`
    accepted: its nesting is bounded, so the recursion is too.
    """
    if isinstance(value, float):
        if abs(value) >= PLAIN_FLOAT_LIMIT:
            return int(Decimal(repr(value)))
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        return {key: as_stored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    return value


def _storable_text(value: str) -> str:
    if (problem := unstorable(value)) is not None:
        raise ValueError(problem)
    return value


NameStr = Annotated[
    str, Field(min_length=1, max_length=NAME_LENGTH), AfterValidator(_strip_nonempty)
]
TaskType = Annotated[
    str, Field(min_length=1, max_length=TASK_TYPE_LENGTH), AfterValidator(_strip_nonempty)
]
RequiredText = Annotated[
    str, Field(min_length=1, max_length=REQUIRED_TEXT_LENGTH), AfterValidator(_strip_nonempty)
]
LongText = Annotated[str, Field(max_length=LONG_TEXT_LENGTH)]
RequiredLongText = Annotated[
    str, Field(min_length=1, max_length=LONG_TEXT_LENGTH), AfterValidator(_strip_nonempty)
]
Label = Annotated[str, Field(max_length=NAME_LENGTH)]
StrictInt = Annotated[int, Strict()]
"""A JSON integer: no booleans, no numeric strings, no floats."""
Flag = Annotated[bool, Strict()]
"""A JSON boolean: no 0/1, no "true"/"yes" strings."""
ResourceRef = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
"""An id naming another resource in a request body."""
SafeText = Annotated[str, AfterValidator(_storable_text)]
"""Text for query parameters: compared with stored text, so it must be storable too."""


def _number_or_string(minimum: float, maximum: float, example: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": minimum, "maximum": maximum},
                {"type": "string", "pattern": _DECIMAL_TEXT},
            ],
            "description": f"A number from {minimum} to {maximum}, as a JSON number or a "
            f'decimal string such as "{example}".',
            "examples": [example],
        }
    )


Temperature = Annotated[
    float,
    BeforeValidator(_number_from_text),
    Field(ge=0, le=2, allow_inf_nan=False),
    _number_or_string(0, 2, "0.6"),
]
TopP = Annotated[
    float,
    BeforeValidator(_number_from_text),
    Field(ge=0, le=1, allow_inf_nan=False),
    _number_or_string(0, 1, "0.9"),
]
DecimalString = Annotated[
    float,
    PlainSerializer(_format_number, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _DECIMAL_TEXT, "examples": ["0.6"]}),
]


def reject_explicit_null(*fields: str) -> Any:
    """Validator for update schemas: a field may be left out, but not sent as null.

    Pair it with `not_null_in_schema(*fields)` as the model's `json_schema_extra`, so the
    documented schema does not offer null for these fields either.
    """
    from pydantic import field_validator

    def _check(cls: type, value: Any) -> Any:
        if value is None:
            raise ValueError("may be omitted but not set to null")
        return value

    return field_validator(*fields)(classmethod(_check))


def not_null_in_schema(*fields: str) -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` for update schemas: drop `null` from the listed optional fields."""

    def _drop_null(schema: dict[str, Any]) -> None:
        for name in fields:
            prop = schema["properties"][name]
            options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
            if len(options) == 1:
                prop.update(options[0])
            elif options:
                prop["anyOf"] = options
            if prop.get("default", ...) is None:
                del prop["default"]

    return _drop_null
