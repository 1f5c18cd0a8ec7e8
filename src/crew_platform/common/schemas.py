from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic.annotated_handlers import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from crew_platform.common.types import as_stored, unstorable


class RequestModel(BaseModel):
    """Base of every request body.

    An unknown field is a 422 naming it (a typo such as `temprature` must not pass silently),
    except the read-only fields of the resource's read model (`read_model`): a client may send
    a GET body back as a PUT, and those are dropped. No field may carry a value the database
    cannot store or the API cannot read back (NUL characters, unpaired surrogates, NaN/Infinity,
    JSON nested deeper than MAX_JSON_DEPTH), so such input is a 422 naming the field instead of
    a failed write or a resource that can no longer be read. Numbers in JSON fields are
    written as the database will hand them back (`as_stored`).
    """

    model_config = ConfigDict(extra="forbid")

    read_model: ClassVar[type[BaseModel] | None] = None
    """The resource's read model, whose other fields are accepted here and ignored."""

    @classmethod
    def read_only_fields(cls) -> frozenset[str]:
        if cls.read_model is None:
            return frozenset()
        return frozenset(cls.read_model.model_fields) - frozenset(cls.model_fields)

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and (ignored := cls.read_only_fields()):
            return {key: value for key, value in data.items() if key not in ignored}
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if (problem := unstorable(value)) is not None:
            raise ValueError(problem)
        return as_stored(value) if isinstance(value, dict | list) else value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Documents the read-only fields as `readOnly` (accepted, ignored) properties."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        properties = target.setdefault("properties", {})
        for name in sorted(cls.read_only_fields()):
            properties[name] = {
                "readOnly": True,
                "description": "Read-only: accepted so a GET body can be sent back, and ignored.",
            }
        return schema


class Deleted(BaseModel):
    id: int
    deleted: bool = True
    message: str
