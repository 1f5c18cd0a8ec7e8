"""Model fallbacks: when a provider answers that a model does not exist (or was retired), the call
goes on with the next model of its chain instead of failing.

A chain is the agent's model, then its `config.fallback_models` in order, then the
`MODEL_FALLBACKS` entry of each model already in the chain (so entries chain on), then the `*`
entry. Each model appears once: a model that was tried is never tried again.

Providers retire models for good, so a model found missing is remembered for
`MODELS_CACHE_SECONDS` (per process): later chains start past it without paying its 404 first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crew_platform.common.limits import NAME_LENGTH
from crew_platform.llm.errors import ModelNotFound
from crew_platform.llm.registry import canonical

if TYPE_CHECKING:
    from crew_platform.llm.gateway import Completion, LLMGateway

log = logging.getLogger(__name__)

ANY_MODEL = "*"
"""The `MODEL_FALLBACKS` key that applies to every model."""


def parse_model_fallbacks(text: str) -> dict[str, str]:
    """`MODEL_FALLBACKS`: comma-separated `model=fallback` entries (`*=model` for any model).

    Raises ValueError naming the variable and the entry at fault: a typo here would otherwise
    show only when a model disappears, which is exactly when the fallback is needed."""
    mapping: dict[str, str] = {}
    if not text.strip():
        return mapping
    for entry in text.split(","):
        model, sep, fallback = (part.strip() for part in entry.partition("="))
        problem = None
        if not sep or not model or not fallback:
            problem = "is not `model=fallback`"
        elif "=" in fallback or ANY_MODEL in fallback:
            problem = "has more than one `=` or a `*` as the fallback"
        elif any(len(name) > NAME_LENGTH or not name.isprintable() for name in (model, fallback)):
            problem = f"has a model id longer than {NAME_LENGTH} characters or unprintable"
        elif any(ch.isspace() for ch in model + fallback):
            problem = "has a model id with a space in it"
        elif model == fallback:
            problem = "names a model as its own fallback"
        elif model in mapping:
            problem = f"names {model!r} a second time"
        if problem:
            raise ValueError(
                f"MODEL_FALLBACKS entry {entry.strip()!r} {problem} "
                "(expected e.g. `llama-4-maverick-17b-128e-instruct=gpt-oss-120b,*=gpt-oss-120b`)"
            )
        mapping[model] = fallback
    return mapping


def fallback_models_of(config: Mapping[str, Any] | None) -> tuple[str, ...]:
    """An agent's `config.fallback_models` (validated when the agent is written; a stored
    value of another shape counts as none)."""
    value = (config or {}).get("fallback_models")
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v.strip())


@dataclass(frozen=True)
class Fallback:
    """One move along a chain: `from_model` is missing, the call goes on with `to_model`."""

    from_model: str
    to_model: str
    reason: str
    """What the provider said of `from_model` (the MODEL_NOT_FOUND message)."""
    remembered: bool
    """True when `from_model` was not called: it was found missing shortly before."""

    def data(self) -> dict[str, Any]:
        """The `model_fallback` event's fields."""
        return {
            "from": self.from_model,
            "to": self.to_model,
            "reason": self.reason,
            "remembered": self.remembered,
        }


FallbackSink = Callable[[Fallback], Awaitable[None]]


@dataclass
class _Missing:
    reason: str
    until: float


class ModelFallbacks:
    """The process's fallback rules (`MODEL_FALLBACKS`) and its memory of missing models."""

    def __init__(self, mapping: Mapping[str, str], *, remember_seconds: float) -> None:
        self._mapping = {canonical(k) if k != ANY_MODEL else k: v for k, v in mapping.items()}
        self._remember_seconds = remember_seconds
        self._missing: dict[str, _Missing] = {}

    def chain(self, model: str, fallback_models: Sequence[str] = ()) -> ModelChain:
        candidates: dict[str, str] = {}  # canonical id -> the id as written
        for name in (model, *fallback_models):
            candidates.setdefault(canonical(name), name)
        names = list(candidates.values())
        index = 0
        while True:
            while index < len(names):  # each model's entry, the entries' entries too
                entry = self._mapping.get(canonical(names[index]))
                if entry is not None and canonical(entry) not in candidates:
                    candidates[canonical(entry)] = entry
                    names.append(entry)
                index += 1
            wildcard = self._mapping.get(ANY_MODEL)
            if wildcard is None or canonical(wildcard) in candidates:
                return ModelChain(names, self)
            candidates[canonical(wildcard)] = wildcard
            names.append(wildcard)

    def remember_missing(self, model: str, reason: str) -> None:
        if self._remember_seconds > 0:
            until = time.monotonic() + self._remember_seconds
            self._missing[canonical(model)] = _Missing(reason, until)

    def known_missing(self, model: str) -> str | None:
        """Why `model` was found missing, while that is remembered; else None."""
        missing = self._missing.get(canonical(model))
        if missing is None:
            return None
        if time.monotonic() >= missing.until:
            del self._missing[canonical(model)]
            return None
        return missing.reason


class ModelChain:
    """The models one step (or agent test) may call, in order, and how far along it is.

    Kept for the whole step, so every model call of a tool loop goes on from the model that
    answered last."""

    def __init__(self, models: Sequence[str], rules: ModelFallbacks) -> None:
        self.models = list(models)
        self._rules = rules
        self._index = 0

    @property
    def current(self) -> str:
        return self.models[self._index]

    async def complete(
        self, gateway: LLMGateway, *, on_fallback: FallbackSink | None = None, **request: Any
    ) -> Completion:
        """`gateway.complete(model=..., **request)` on the current model, moving on along the
        chain while models turn out missing; the completion's `model` says which answered.
        Raises the last ModelNotFound when the chain is used up."""
        while (reason := self._rules.known_missing(self.current)) is not None:
            if not await self._advance(reason, on_fallback, remembered=True):
                break  # the last model is called anyway: the provider may serve it again
        while True:
            model = self.current
            try:
                completion = await gateway.complete(model=model, **request)
            except ModelNotFound as exc:
                self._rules.remember_missing(model, exc.message)
                if not await self._advance(exc.message, on_fallback, remembered=False):
                    raise self._used_up(exc) from None
                continue
            completion.model = model
            return completion

    async def _advance(
        self, reason: str, on_fallback: FallbackSink | None, *, remembered: bool
    ) -> bool:
        if self._index + 1 >= len(self.models):
            return False
        change = Fallback(self.current, self.models[self._index + 1], reason, remembered)
        self._index += 1
        log.warning(
            "model %s is not served%s, falling back to %s: %s",
            change.from_model,
            " (remembered)" if remembered else "",
            change.to_model,
            reason,
        )
        if on_fallback is not None:
            await on_fallback(change)
        return True

    def _used_up(self, last: ModelNotFound) -> ModelNotFound:
        tried = self.models[: self._index + 1]
        if len(tried) == 1:
            return last
        return ModelNotFound(
            f"{last.message}; no fallback is served either (tried {', '.join(tried)})",
            last.details | {"tried": tried},
        )
