"""Wiring and lifecycle: settings -> service -> aiohttp app -> a process that drains on SIGTERM.

Start-up listens first and loads the engine in the background, so ``/healthz`` answers
during a long model load while ``/readyz`` stays 503 until warmup has finished.  If the
engine cannot load, the process logs one clear line and exits 1: readiness never turns
green and Kubernetes shows the error in the pod's log.

On SIGTERM or SIGINT: ``/readyz`` turns 503 at once, new synthesis requests get 503,
everything queued or in flight is finished (bounded by ``TTS_SHUTDOWN_TIMEOUT_S``),
then the server stops and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from . import __version__
from .api import SERVICE, build_app
from .settings import Settings, SettingsError
from .speech_service import SpeechService

log = logging.getLogger("tts_service")


async def _lifecycle(app: web.Application):
    """aiohttp cleanup context: start loading in the background; drain and close at the end."""
    service = app[SERVICE]
    loading = asyncio.get_running_loop().create_task(service.start(), name="tts-startup")
    app[STARTUP_TASK] = loading
    yield
    if not loading.done():
        loading.cancel()
    await asyncio.gather(loading, return_exceptions=True)
    await service.close()


async def _drain_on_shutdown(app: web.Application) -> None:
    await app[SERVICE].drain()


STARTUP_TASK: web.AppKey[asyncio.Task] = web.AppKey("startup_task", asyncio.Task)


def create_app(settings: Settings, service: SpeechService | None = None) -> web.Application:
    """The complete application; the engine starts loading when the app starts."""
    app = build_app(service or SpeechService(settings))
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_drain_on_shutdown)
    return app


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until the engine fails to load (exit 1)."""
    try:
        service = SpeechService(settings)
    except Exception as exc:  # e.g. an engine that does not exist or a bad default voice
        log.error("cannot start: %s", exc)
        return 1
    app = create_app(settings, service)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_s,
        access_log=None,
        # Cancel a handler whose client disconnected, so its queued request is dropped
        # instead of computed for nobody (aiohttp's default is to let it run).
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info(
        "kubetts %s listening on http://%s:%d (engine=%s, max_batch_size=%d, max_wait_ms=%g)",
        __version__,
        settings.host,
        settings.port,
        settings.engine,
        settings.max_batch_size,
        settings.max_wait_ms,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = loop.create_task(stop.wait())
    startup = app[STARTUP_TASK]
    await asyncio.wait([startup, stopping], return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if startup.done() and not startup.cancelled() and startup.exception() is not None:
        error = startup.exception()
        log.error("engine %s failed to start: %s: %s", settings.engine, type(error).__name__, error)
        exit_code = 1
    else:
        await stopping
        log.info("signal received: draining")
        await service.drain()
    await runner.cleanup()
    return exit_code


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    """``kubetts-service`` / ``python -m tts_service``."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"kubetts-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    raise SystemExit(asyncio.run(serve(settings)))
