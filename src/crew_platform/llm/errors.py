"""Model-side failures, typed so the engine and the API can tell them apart."""

from __future__ import annotations

from crew_platform.errors import PlatformError


class LLMError(PlatformError):
    status_code = 502
    code = "LLM_ERROR"


class LLMNotConfigured(LLMError):
    status_code = 503
    code = "LLM_NOT_CONFIGURED"


class ModelNotFound(LLMError):
    status_code = 422
    code = "MODEL_NOT_FOUND"
