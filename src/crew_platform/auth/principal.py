"""Who made the request, and what the services need to know of it.

The auth middleware authenticates the request and runs the rest of it inside `calling_as`; the
services read the caller back through `current_owner` and `current_creator`. A context variable
(not a parameter on every service function) keeps routes thin and covers routes added later:
every service that looks rows up by id or lists them applies the owner filter by itself.
With AUTH_MODE=none no caller is ever set: nothing is filtered and `created_by` stays null.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    ADMIN = "admin"
    """Every scope, and every owner's resources."""


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """The known scope names among `values`; unknown names are ignored."""
    known = {scope.value for scope in Scope}
    return frozenset(Scope(value) for value in values if value in known)


@dataclass(frozen=True)
class Principal:
    subject: str
    """The JWT's `sub`, or the API key's subject: what `created_by` records."""
    scopes: frozenset[Scope]
    via: str
    """`jwt` or `api_key`."""

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes


@dataclass(frozen=True)
class Caller:
    principal: Principal
    ownership: bool
    """AUTH_OWNERSHIP: restrict the principal to its own resources (unless admin)."""

    @property
    def owner(self) -> str | None:
        """The `created_by` the caller is restricted to; None when it sees everything."""
        if not self.ownership or self.principal.is_admin:
            return None
        return self.principal.subject


_caller: ContextVar[Caller | None] = ContextVar("crew_platform_caller", default=None)


@contextmanager
def calling_as(caller: Caller) -> Iterator[None]:
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)


def current_caller() -> Caller | None:
    return _caller.get()


def current_owner() -> str | None:
    """Only rows with this `created_by` exist for the caller; None: no restriction."""
    caller = _caller.get()
    return caller.owner if caller is not None else None


def current_creator() -> str | None:
    """The `created_by` of what the caller creates (None without authentication)."""
    caller = _caller.get()
    return caller.principal.subject if caller is not None else None
