"""Shared fixtures: settings, a loaded espeak engine, and a running service app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from tts_service.api import SERVICE
from tts_service.app import create_app
from tts_service.engines.espeak import EspeakEngine
from tts_service.settings import Settings


@pytest.fixture(scope="session")
def espeak_engine() -> EspeakEngine:
    """One loaded engine for tests that call it directly (from the test thread only)."""
    engine = EspeakEngine()
    engine.load()
    yield engine
    engine.close()


@pytest.fixture
def make_client(aiohttp_client) -> Callable:
    """Start the real app (real espeak engine) in aiohttp's test server and wait until ready."""

    async def make(**overrides):
        settings = Settings().replace(**overrides)
        app = create_app(settings)
        client = await aiohttp_client(app)
        await asyncio.wait_for(app[SERVICE].wait_ready(), timeout=60)
        return client

    return make


@pytest.fixture
async def client(make_client) -> AsyncIterator:
    return await make_client()
