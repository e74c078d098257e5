"""An engine failure is met in proportion: out of memory and poisoned input are retried in halves,
a broken device fails at once and takes the replica out of service.

Each class is driven through the real app, batcher and worker, with the real espeak engine
raising the exception a GPU engine would (torch's own OutOfMemoryError; CUDA's error text).
"""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest
import torch
from app_client import service_of
from test_api import metric, scrape, wait_until
from tts_service.engines.espeak import EspeakEngine
from tts_service.engines.failures import Failure, classify_failure

SPEECH = "/v1/audio/speech"
ILLEGAL_ACCESS = (
    "CUDA error: an illegal memory access was encountered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call"
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), Failure.OUT_OF_MEMORY),
        (MemoryError(), Failure.OUT_OF_MEMORY),
        (RuntimeError("CUDA error: out of memory"), Failure.OUT_OF_MEMORY),
        (RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"), Failure.OUT_OF_MEMORY),
        (RuntimeError(ILLEGAL_ACCESS), Failure.DEVICE),
        (torch.AcceleratorError("CUDA error: device-side assert triggered"), Failure.DEVICE),
        (RuntimeError("CUDA error: unspecified launch failure"), Failure.DEVICE),
        (RuntimeError("CUDA error: uncorrectable ECC error encountered"), Failure.DEVICE),
        (RuntimeError("Unable to determine the device handle: GPU has fallen off the bus"), Failure.DEVICE),
        (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm"), Failure.DEVICE),
        (ValueError("text contains an unknown token"), Failure.INPUT),
        (RuntimeError("shape mismatch: [3, 4] vs [3, 5]"), Failure.INPUT),
        (IndexError("index out of range in self"), Failure.INPUT),
    ],
)
def test_failures_are_classified_by_type_then_message(error, kind):
    assert classify_failure(error) is kind
    assert EspeakEngine().classify_failure(error) is kind  # the engine's default


class FailingEngine(EspeakEngine):
    """The real engine, failing as told; counts its calls (after warmup) and their sizes."""

    def __init__(self, fail) -> None:
        super().__init__()
        self.fail = fail  # items -> exception to raise, or None
        self.calls: list[int] = []
        self.armed = False
        self.gate = threading.Event()
        self.gate.set()

    def synthesize(self, items):
        if self.armed:
            assert self.gate.wait(timeout=30)
            self.calls.append(len(items))
            error = self.fail(items)
            if error is not None:
                raise error
        return super().synthesize(items)


async def start(make_service_client, engine, **settings):
    client = await make_service_client(engine, **settings)
    engine.armed = True  # warmup is over
    return client


def post(client, text: str):
    return asyncio.ensure_future(client.post(SPEECH, json={"input": text, "response_format": "pcm"}))


async def test_out_of_memory_halves_the_batch_until_it_fits_and_nobody_fails(make_service_client):
    engine = FailingEngine(
        lambda items: torch.OutOfMemoryError("CUDA out of memory") if len(items) > 2 else None
    )
    client = await start(make_service_client, engine, max_batch_size=8, max_wait_ms=5000)
    responses = await asyncio.gather(*(post(client, f"Request {i}.") for i in range(8)))
    assert [r.status for r in responses] == [200] * 8
    assert engine.calls == [8, 4, 2, 2, 4, 2, 2]
    samples = await scrape(client)
    assert metric(samples, "tts_engine_errors_total", code="out_of_memory") == 0  # no request failed
    assert service_of(client).ready


async def test_out_of_memory_of_a_single_request_is_its_own_500(make_service_client):
    engine = FailingEngine(lambda items: torch.OutOfMemoryError("CUDA out of memory"))
    client = await start(make_service_client, engine, max_batch_size=1)
    response = await post(client, "Too big for this card.")
    assert response.status == 500
    assert (await response.json())["error"]["code"] == "out_of_memory"
    assert (await client.get("/readyz")).status == 200 and (await client.get("/healthz")).status == 200


async def test_a_poisoned_input_is_isolated_and_fails_alone(make_service_client):
    engine = FailingEngine(
        lambda items: ValueError("the model choked") if any("POISON" in i.text for i in items) else None
    )
    client = await start(make_service_client, engine, max_batch_size=8, max_wait_ms=5000)
    texts = [f"Fine {i}." for i in range(7)] + ["POISON."]
    responses = await asyncio.gather(*(post(client, t) for t in texts))
    assert [r.status for r in responses] == [200] * 7 + [500]
    assert (await responses[7].json())["error"]["code"] == "engine_error"
    assert engine.calls == [8, 4, 4, 2, 2, 1, 1]
    assert service_of(client).ready and (await client.get("/healthz")).status == 200


async def test_a_broken_device_fails_the_batch_at_once_and_takes_the_replica_out(make_service_client):
    engine = FailingEngine(lambda items: RuntimeError(ILLEGAL_ACCESS))
    client = await start(make_service_client, engine, max_batch_size=4, max_wait_ms=0)
    service = service_of(client)
    engine.gate.clear()  # hold the first batch until more requests queue behind it
    running = [post(client, "First.")]
    await wait_until(lambda: service.batcher.in_flight == 1)
    queued = [post(client, f"Queued {i}.") for i in range(6)]
    await wait_until(lambda: service.batcher.queue_depth == 6)
    engine.gate.set()
    responses = await asyncio.gather(*running, *queued)

    # One engine call, not a halving cascade; everyone gets a retryable 503 at once.
    assert engine.calls == [1]
    assert [r.status for r in responses] == [503] * 7
    for r in responses:
        error = (await r.json())["error"]
        assert error["code"] == "engine_failed" and "illegal memory access" in error["message"]
        assert r.headers["Retry-After"] == "5"
    # Out of service: not ready (no traffic), not healthy (the liveness probe restarts the pod).
    ready, health = await client.get("/readyz"), await client.get("/healthz")
    assert ready.status == 503 and (await ready.json())["status"] == "failed"
    assert health.status == 503 and "illegal memory access" in (await health.json())["error"]
    later = await post(client, "After the failure.")
    assert later.status == 503 and (await later.json())["error"]["code"] == "not_ready"
    assert engine.calls == [1]  # the broken engine was never called again
    samples = await scrape(client)
    assert metric(samples, "tts_ready") == 0
    assert metric(samples, "tts_engine_errors_total", code="engine_failed") == 7


async def test_a_device_failure_mid_stream_cuts_the_stream_and_fails_the_replica(make_service_client):
    class BreaksMidStream(EspeakEngine):
        def synthesize_stream(self, items, wanted=lambda i: True, eager=lambda i: True):
            for step, chunks in enumerate(super().synthesize_stream(items, wanted)):
                if step == 1 and any("BREAK" in item.text for item in items):
                    raise RuntimeError("CUDA error: device-side assert triggered")
                yield chunks

    client = await make_service_client(BreaksMidStream())
    response = await client.post(
        SPEECH,
        json={"input": "First part. BREAK here. Never said.", "response_format": "pcm", "stream": True},
    )
    assert response.status == 200  # the first sentence went out
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert (await client.get("/healthz")).status == 503
    samples = await scrape(client)
    assert metric(samples, "tts_streams_aborted_total", reason="engine_failed") == 1
    assert metric(samples, "tts_requests_total", route=SPEECH, code="aborted") == 1
