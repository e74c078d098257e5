"""A published peer for bench/continuous.py: the same ChatTTS engine behind Ray Serve's ``@serve.batch``.

    PYTHONPATH=<ray lib>:service python bench/ray_serve_peer.py --port 8000   (env: TTS_* as the service)

One replica owns a :class:`~tts_service.engines.chattts.ChatTTSEngine` (settings from the same
``TTS_*`` env); requests are batched by Ray Serve (max batch 8, wait 80 ms -- the write-up's
numbers) into one ``engine.synthesize`` call each, on one thread, like our worker.  Speaks the
subset of the API the benchmark uses: ``POST /v1/audio/speech`` (pcm) and ``GET /readyz``.
Listens on 127.0.0.1 only; SIGTERM shuts Ray down.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_BATCH, WAIT_S = 8, 0.08


@serve.deployment(max_ongoing_requests=4096)
class ChatTTSPeer:
    def __init__(self) -> None:
        from tts_service.engines.chattts import ChatTTSEngine
        from tts_service.settings import Settings

        self.engine = ChatTTSEngine(Settings.from_env())
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pool.submit(self.engine.load).result()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=WAIT_S)
    async def synthesize(self, texts: list[str]) -> list[bytes]:
        from tts_service.engines import SynthesisItem

        items = [SynthesisItem(t, self.engine.resolve_voice(None, t)) for t in texts]
        audios = await asyncio.get_running_loop().run_in_executor(self.pool, self.engine.synthesize, items)
        return [(np.clip(a, -1.0, 1.0) * 32767).astype("<i2").tobytes() for a in audios]

    async def __call__(self, request: Request) -> Response:
        if request.url.path.rstrip("/") == "/readyz":
            return JSONResponse({"status": "ready"})
        body = await request.json()
        pcm = await self.synthesize(body["input"])
        return Response(pcm, media_type="audio/pcm", headers={"X-TTS-Sample-Rate": "24000"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ray.init(include_dashboard=False, num_cpus=2, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(ChatTTSPeer.bind(), route_prefix="/", blocking=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
