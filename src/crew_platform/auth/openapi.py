"""The security schemes in /openapi.json when authentication is on: every operation but
`/health` takes a bearer token or an API key, needs the scope the rule table gives it
(`x-required-scope`), and may answer 401 and 403."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from crew_platform.auth.middleware import OPEN_PATHS
from crew_platform.auth.scopes import required_scope
from crew_platform.settings import Settings

SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A JWT (AUTH_MODE=jwt) or an API key (`crew_...`).",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
METHODS = ("get", "put", "post", "delete", "patch", "head")


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document_security(app: FastAPI, settings: Settings) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SCHEMES)
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if method not in METHODS:
                    continue
                if path in OPEN_PATHS:
                    operation["security"] = []
                    continue
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                operation["x-required-scope"] = required_scope(method.upper(), path).value
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", _error("No credential, or not a valid one"))
                responses.setdefault("403", _error("The credential lacks the scope"))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
