"""Helpers for tests that run the app in aiohttp's test server."""

from __future__ import annotations

import asyncio

from tts_service.api import SERVICE
from tts_service.app import STARTUP_TASK
from tts_service.speech_service import SpeechService


async def started(client) -> None:
    """Wait until the app's engine has loaded and warmed up (raises what start-up raised)."""
    await asyncio.wait_for(asyncio.shield(client.server.app[STARTUP_TASK]), timeout=60)


def service_of(client) -> SpeechService:
    return client.server.app[SERVICE]
