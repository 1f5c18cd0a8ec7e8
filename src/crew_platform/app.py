"""create_app(): routers, error handlers, middleware and the lifespan that owns every resource."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy import text

from crew_platform.agents.router import router as agents_router
from crew_platform.catalog.router import router as models_router
from crew_platform.catalog.schemas import Health
from crew_platform.catalog.service import health as health_of
from crew_platform.common.http import install_error_handlers
from crew_platform.db import create_engine, create_sessionmaker
from crew_platform.edge.body_limit import BodyLimitMiddleware
from crew_platform.edge.docs_ui import install_docs
from crew_platform.engine import Dispatcher, Executor, Heartbeat, Process
from crew_platform.events.bus import create_bus
from crew_platform.executions.router import router as executions_router
from crew_platform.llm.gateway import LLMGateway
from crew_platform.reads import create_reads
from crew_platform.realtime.hub import Hub
from crew_platform.realtime.sse import router as sse_router
from crew_platform.realtime.ws import router as ws_router
from crew_platform.settings import Settings, get_settings, limit_is_off
from crew_platform.startup import StartupFailed, check_executor
from crew_platform.startup import startup_step as _startup_step
from crew_platform.tasks.router import router as tasks_router
from crew_platform.toolbox.router import servers_router as mcp_servers_router
from crew_platform.toolbox.router import tools_router
from crew_platform.tools.registry import Registry
from crew_platform.workers.router import router as workers_router
from crew_platform.workflows.router import router as workflows_router

log = logging.getLogger(__name__)

__all__ = ["StartupFailed", "create_app"]


def rate_limited(settings: Settings) -> bool:
    """Whether any rate limit is on; when none is, the middleware (and `limits`) is not loaded."""
    return not (limit_is_off(settings.rate_limit_api) and limit_is_off(settings.rate_limit_ws))


def authenticated(settings: Settings) -> bool:
    return settings.auth_mode != "none"


def _install_edge(app: FastAPI, settings: Settings) -> None:
    """The middlewares, innermost first: body limit, authentication, rate limits (a request
    over the rate limit is refused before its credential is checked)."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    counts_failures = authenticated(settings) and not limit_is_off(
        settings.rate_limit_auth_failures
    )
    limits = None
    if rate_limited(settings) or counts_failures:
        from crew_platform.edge.ratelimit import RateLimits

        limits = RateLimits(settings)
    if authenticated(settings):
        from crew_platform.auth.middleware import AuthMiddleware
        from crew_platform.edge.log_redaction import install_log_redaction

        install_log_redaction(settings)
        from crew_platform.auth.openapi import document_security

        app.add_middleware(AuthMiddleware, settings=settings, limits=limits)
        document_security(app, settings)
    if limits is not None and rate_limited(settings):
        from crew_platform.edge.ratelimit import RateLimitMiddleware

        app.add_middleware(RateLimitMiddleware, limits=limits)


DESCRIPTION = """Run teams of AI agents (role, goal, backstory, model) through workflows of tasks,
on Cerebras inference by default. Errors always use the envelope
`{"error": CODE, "message": ..., "details": {...}}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Whatever start-up opened is closed in reverse order, also when a later step fails.
        async with contextlib.AsyncExitStack() as stack:
            check_executor(settings)  # EXECUTOR=queue without what it needs: one line, no more
            engine = create_engine(settings)
            stack.push_async_callback(engine.dispose)
            sessionmaker = create_sessionmaker(engine)
            reads = create_reads(settings, engine)
            stack.push_async_callback(reads.close)
            heartbeat = Heartbeat(engine, Process.new("server"), settings.lease_seconds)
            # After the runners and the bus stopped, before the SQLite readers close (retiring
            # after them left a shutdown waiting for ever on SQLite).
            stack.push_async_callback(heartbeat.retire)
            if authenticated(settings):
                from crew_platform.auth.authenticator import Authenticator

                with _startup_step("reading the JWT verification key (JWT_PUBLIC_KEY)"):
                    app.state.authenticator = Authenticator(settings, reads)
            bus = create_bus(settings)
            stack.push_async_callback(bus.stop)  # also releases what a failed start() opened
            with _startup_step("connecting to the event bus (REDIS_URL)"):
                await bus.start()
            gateway = LLMGateway(settings)
            stack.push_async_callback(gateway.aclose)
            tools = Registry(settings, sessionmaker)
            app.state.tools = tools
            executor: Executor
            dispatcher: Dispatcher | None = None
            if settings.executor == "queue":
                # The workers run the executions: this process enqueues them and holds none.
                from crew_platform.taskqueue.enqueuer import Enqueuer

                enqueuer = Enqueuer.from_settings(settings)
                stack.push_async_callback(enqueuer.shutdown)
                await enqueuer.start()  # a broker that is down is logged and tried again
                executor = enqueuer
            else:
                executor = dispatcher = Dispatcher.of_process(
                    sessionmaker,
                    bus,
                    gateway,
                    tools,
                    owner=heartbeat.process.id,
                    tool_timeout=settings.tool_timeout_seconds,
                    max_running=settings.execution_max_concurrency,
                )
            hub = Hub(bus, settings.ws_queue_size)
            hub.start()
            stack.callback(hub.stop)
            if dispatcher is not None:
                stack.push_async_callback(dispatcher.shutdown)
            app.state.settings = settings
            app.state.engine = engine
            app.state.sessionmaker = sessionmaker
            app.state.reads = reads
            app.state.bus = bus
            app.state.gateway = gateway
            app.state.dispatcher = executor
            app.state.heartbeat = heartbeat
            app.state.hub = hub
            if dispatcher is not None:
                with _startup_step("recovering executions from the database (DATABASE_URL)"):
                    await heartbeat.register()  # live before it takes anything
                    await dispatcher.recover()
                heartbeat.start(dispatcher)
                stack.push_async_callback(heartbeat.stop)
            yield

    app = FastAPI(
        title="Crew Platform",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    _install_edge(app, settings)
    for router in (
        agents_router,
        workflows_router,
        tasks_router,
        sse_router,
        executions_router,
        models_router,
        tools_router,
        mcp_servers_router,
        ws_router,
        workers_router,
    ):
        app.include_router(router)
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        tags=["health"],
        summary="Liveness, database and providers check",
    )
    return app


async def health(request: Request) -> Health:
    """`providers` says which model providers have a key and where they are called; it
    never shows a key."""
    # Module-level, reading the app from the request: FastAPI caches endpoints by identity, so
    # a closure over the app would keep every app ever built alive.
    state = request.app.state
    async with state.sessionmaker() as session:
        await session.execute(text("SELECT 1"))
    return health_of(state.gateway)
