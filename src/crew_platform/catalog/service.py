"""The catalog's answers, built from the gateway (which knows nothing of HTTP)."""

from __future__ import annotations

from crew_platform.catalog.schemas import (
    Health,
    ModelList,
    ModelRead,
    ProviderHealth,
    ProviderState,
)
from crew_platform.llm.errors import LLMError
from crew_platform.llm.gateway import LLMGateway
from crew_platform.llm.registry import CEREBRAS


async def list_models(gateway: LLMGateway, default_model: str) -> ModelList:
    """`id` is the value to put in an agent's `model`: bare for Cerebras, `provider:model`
    otherwise."""
    models: list[ModelRead] = []
    providers: list[ProviderState] = []
    for config in gateway.providers():
        error = None
        if config.configured:
            try:
                for info in await gateway.list_models(config.name):
                    ident = info.id if config.name == CEREBRAS else f"{config.name}:{info.id}"
                    models.append(
                        ModelRead(
                            id=ident, provider=config.name, model=info.id, owned_by=info.owned_by
                        )
                    )
            except LLMError as exc:
                error = exc.message
        else:
            error = f"not configured: set {config.key_variable}"
        providers.append(
            ProviderState(
                name=config.name,
                configured=config.configured,
                base_url=_shown_url(gateway, config.base_url),
                error=error,
            )
        )
    return ModelList(default_model=default_model, models=models, providers=providers)


def health(gateway: LLMGateway) -> Health:
    return Health(
        status="ok",
        providers={
            config.name: ProviderHealth(
                configured=config.configured, base_url=_shown_url(gateway, config.base_url)
            )
            for config in gateway.providers()
        },
    )


def _shown_url(gateway: LLMGateway, url: str | None) -> str | None:
    """The base URL without credentials someone may have put in it."""
    return None if url is None else gateway.redact(url)
