"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.engine import Executor
from crew_platform.events.bus import EventBus
from crew_platform.reads import Reads
from crew_platform.settings import Settings
from crew_platform.tools.base import Toolbox


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; services commit, anything else is rolled back on close."""
    async with request.app.state.sessionmaker() as session:
        yield session


async def get_reads(request: Request) -> Reads:
    reads: Reads = request.app.state.reads
    return reads


# Every dependency is `async def`: FastAPI runs plain functions in its thread pool.
async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_dispatcher(request: Request) -> Executor:
    dispatcher: Executor = request.app.state.dispatcher
    return dispatcher


async def get_bus(request: Request) -> EventBus:
    bus: EventBus = request.app.state.bus
    return bus


async def get_toolbox(request: Request) -> Toolbox:
    toolbox: Toolbox = request.app.state.tools
    return toolbox


SessionDep = Annotated[AsyncSession, Depends(get_session)]
ReadsDep = Annotated[Reads, Depends(get_reads)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
DispatcherDep = Annotated[Executor, Depends(get_dispatcher)]
BusDep = Annotated[EventBus, Depends(get_bus)]
ToolboxDep = Annotated[Toolbox, Depends(get_toolbox)]
