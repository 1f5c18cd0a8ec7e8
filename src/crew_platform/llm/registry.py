"""Which provider serves a model name: bare names go to Cerebras, `provider:model` elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from crew_platform.settings import Settings

CEREBRAS = "cerebras"
OPENAI = "openai"
PROVIDERS = (CEREBRAS, OPENAI)


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    base_url: str | None
    api_key: SecretStr | None
    key_variable: str

    @property
    def key(self) -> str | None:
        """The key's value, for the provider's HTTP client only; an empty one counts as none."""
        value = self.api_key.get_secret_value() if self.api_key else ""
        return value or None

    @property
    def configured(self) -> bool:
        return self.key is not None


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


def canonical(model_name: str) -> str:
    """One spelling per model: `cerebras:gpt-oss-120b` and `gpt-oss-120b` are the same."""
    ref = resolve(model_name)
    return ref.model if ref.provider == CEREBRAS else f"{ref.provider}:{ref.model}"


def configured_keys(settings: Settings) -> list[str]:
    """Every provider key's value: what redaction must never let through."""
    return [key for config in provider_configs(settings).values() if (key := config.key)]


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    return {
        CEREBRAS: ProviderConfig(
            CEREBRAS, settings.cerebras_base_url, settings.cerebras_api_key, "CEREBRAS_API_KEY"
        ),
        OPENAI: ProviderConfig(
            OPENAI, settings.openai_base_url, settings.openai_api_key, "OPENAI_API_KEY"
        ),
    }
