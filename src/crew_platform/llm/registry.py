"""Which provider serves a model name: bare names go to Cerebras, `provider:model` elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

from crew_platform.settings import Settings

CEREBRAS = "cerebras"
OPENAI = "openai"
PROVIDERS = (CEREBRAS, OPENAI)


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    base_url: str | None
    api_key: str | None
    key_variable: str


@dataclass(frozen=True)
class ModelRef:
    provider: str
    model: str


def resolve(model_name: str) -> ModelRef:
    """`openai:gpt-4o-mini` -> openai; `llama3.1-8b` or `llama3:8b` (unknown prefix) -> Cerebras."""
    prefix, sep, rest = model_name.partition(":")
    if sep and prefix.lower() in PROVIDERS and rest:
        return ModelRef(prefix.lower(), rest)
    return ModelRef(CEREBRAS, model_name)


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    return {
        CEREBRAS: ProviderConfig(
            CEREBRAS, settings.cerebras_base_url, settings.cerebras_api_key, "CEREBRAS_API_KEY"
        ),
        OPENAI: ProviderConfig(
            OPENAI, settings.openai_base_url, settings.openai_api_key, "OPENAI_API_KEY"
        ),
    }
