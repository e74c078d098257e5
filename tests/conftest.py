"""Shared fixtures: settings, a loaded espeak engine, a running service app, and the real cluster."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestServer
from app_client import started
from tts_service.app import create_app
from tts_service.engines.base import Engine
from tts_service.engines.espeak import EspeakEngine
from tts_service.settings import Settings
from tts_service.speech_service import SpeechService


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A random-weights ChatTTS checkpoint of the real architecture (tests/chattts_checkpoint.py)."""
    from chattts_checkpoint import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("chattts"))


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
        client = await aiohttp_client(create_app(Settings().replace(**overrides)))
        await started(client)
        return client

    return make


class _TestServer(TestServer):
    """aiohttp's test server, with handler cancellation as asked (aiohttp's own always cancels)."""

    def __init__(self, app, *, handler_cancellation: bool) -> None:
        super().__init__(app)
        self._handler_cancellation = handler_cancellation

    async def _make_runner(self, **kwargs):
        kwargs["handler_cancellation"] = self._handler_cancellation
        return await super()._make_runner(**kwargs)


@pytest.fixture
def make_service_client(aiohttp_client) -> Callable:
    """The real app around a given engine (often a real one with a fault added), started.

    ``handler_cancellation=True`` (the default) is how ``serve()`` runs production: a client
    that goes away cancels its handler.  False is aiohttp's own default, where the handler
    runs on until a write fails.
    """

    async def make(engine: Engine, handler_cancellation: bool = True, **settings):
        service = SpeechService(Settings(**settings), engine)
        app = create_app(service.settings, service)
        client = await aiohttp_client(_TestServer(app, handler_cancellation=handler_cancellation))
        await started(client)
        return client

    return make


@pytest.fixture
async def client(make_client) -> AsyncIterator:
    return await make_client()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, request):
    """The real control plane with the chart installed (session-wide; each test takes a namespace).

    Skipped only where the control plane was not built (``scripts/install-control-plane.sh``);
    ``./dev test`` builds it and sets KUBETTS_REQUIRE_CONTROL_PLANE, which turns a missing
    build into a failure.  Logs stay in the printed directory.
    """
    import control_plane
    from kube_cluster import start_cluster

    missing = control_plane.missing_binaries()
    if missing:
        message = (
            f"the control plane is not built ({', '.join(missing)}): run scripts/install-control-plane.sh"
        )
        if os.environ.get("KUBETTS_REQUIRE_CONTROL_PLANE"):
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("cluster")
    plane = control_plane.start_control_plane(workdir)
    try:
        yield start_cluster(plane, workdir)
    finally:
        plane.stop()
        if request.session.testsfailed:
            print(f"\ncontrol plane logs (etcd, kube-apiserver, ..., audit.log): {workdir}")
