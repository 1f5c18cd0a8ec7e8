"""Reusable pydantic field types for the API schemas."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema


def _strip_nonempty(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty or blank")
    return stripped


def _number_from_text(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number or a numeric string, not a boolean")
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError("must be a number or a numeric string such as \"0.6\"") from None
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


def _format_number(value: float) -> str:
    return repr(float(value))


NameStr = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_strip_nonempty)]
RequiredText = Annotated[
    str, Field(min_length=1, max_length=20_000), AfterValidator(_strip_nonempty)
]
LongText = Annotated[str, Field(max_length=100_000)]
Label = Annotated[str, Field(max_length=200)]
StrictInt = Annotated[int, BeforeValidator(_no_bool)]

_NUMBER_OR_STRING = WithJsonSchema(
    {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\s*-?\d+(\.\d+)?\s*$"}]}
)
Temperature = Annotated[
    float,
    BeforeValidator(_number_from_text),
    Field(ge=0, le=2, allow_inf_nan=False),
    _NUMBER_OR_STRING,
]
TopP = Annotated[
    float,
    BeforeValidator(_number_from_text),
    Field(ge=0, le=1, allow_inf_nan=False),
    _NUMBER_OR_STRING,
]
DecimalString = Annotated[float, PlainSerializer(_format_number, return_type=str),
                          WithJsonSchema({"type": "string", "examples": ["0.6"]})]


def reject_explicit_null(*fields: str) -> Any:
    """Validator for update schemas: a field may be left out, but not sent as null."""
    from pydantic import field_validator

    def _check(cls: type, value: Any) -> Any:
        if value is None:
            raise ValueError("may be omitted but not set to null")
        return value

    return field_validator(*fields)(classmethod(_check))  # type: ignore[arg-type]
