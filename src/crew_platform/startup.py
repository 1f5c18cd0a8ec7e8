"""Start-up checks and failures shared by the processes (`serve`, `worker`): a step that fails
names itself and the setting behind it, in one line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from crew_platform.settings import Settings

BROKER_SCHEMES = {"redis": "redis", "rediss": "redis", "amqp": "amqp", "amqps": "amqp"}
"""BROKER_URL schemes, and the broker each one means (Redis Streams or RabbitMQ)."""


class StartupFailed(RuntimeError):
    """A step of start-up failed; the message names the step and the setting behind it."""


class ExecutorMisconfigured(StartupFailed):
    """EXECUTOR=queue without what it needs; the message names the setting, in one line."""


@contextlib.contextmanager
def startup_step(what: str) -> Iterator[None]:
    try:
        yield
    except StartupFailed:
        raise
    except Exception as exc:
        raise StartupFailed(f"start-up failed {what}: {exc}") from exc


def broker_kind(url: str) -> str | None:
    """`redis` or `amqp` for a BROKER_URL, None for any other scheme."""
    return BROKER_SCHEMES.get(url.split("://", 1)[0].lower()) if "://" in url else None


def executor_problem(settings: Settings, *, worker: bool = False) -> str | None:
    """Why this configuration cannot run EXECUTOR=queue (one line naming the setting), or
    None (also for a server with EXECUTOR=inprocess, which needs nothing). A `worker` needs
    EXECUTOR=queue: with `inprocess` the API processes would run their executions themselves
    and send the workers nothing."""
    if settings.executor != "queue":
        if worker:
            return (
                "a worker needs EXECUTOR=queue (with BROKER_URL, REDIS_URL and a PostgreSQL "
                "DATABASE_URL), as the API processes have: with EXECUTOR=inprocess they run "
                "their executions themselves"
            )
        return None
    if settings.is_sqlite:
        return (
            "EXECUTOR=queue needs PostgreSQL as DATABASE_URL: API processes and workers share "
            "one database, and SQLite is a file of one machine with a single writer"
        )
    if not settings.broker_url:
        return (
            "EXECUTOR=queue needs BROKER_URL (redis://host:6379/0 or amqp://user:pass@host:5672/): "
            "the API enqueues executions there and the workers consume them"
        )
    if broker_kind(settings.broker_url) is None:
        return (
            "BROKER_URL must start with redis://, rediss://, amqp:// or amqps:// "
            "(Redis Streams or RabbitMQ)"
        )
    if not settings.redis_url:
        return (
            "EXECUTOR=queue needs REDIS_URL: events, cancels and pauses cross from the workers "
            "to the API processes (and back) through Redis"
        )
    return None


def check_executor(settings: Settings, *, worker: bool = False) -> None:
    if (problem := executor_problem(settings, worker=worker)) is not None:
        raise ExecutorMisconfigured(problem)
