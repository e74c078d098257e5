"""Prometheus metrics: the names here are the contract the operator's alert rules use.

Each app gets its own ``CollectorRegistry`` so several services can live in one process
(the tests do that) without duplicate-registration errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# Fine enough for a p99 anywhere between 50 ms and 30 s (the alert default is 1.2 s).
LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0,
    1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
SEGMENT_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)

REQUEST_DURATION = "tts_request_duration_seconds"
# The autoscaler's latency signal: successful whole-file synthesis only (no errors, no 503s
# answered in microseconds, no streams whose length is the audio's).
SYNTHESIS_DURATION = "tts_synthesis_duration_seconds"
QUEUE_WAIT = "tts_queue_wait_seconds"
REJECTED = "tts_rejected_total"
# One engine call's wall time; its rate is the engine's busy fraction (one worker per process).
INFERENCE_DURATION = "tts_inference_duration_seconds"
BUILD_INFO = "tts_build_info"
METRIC_NAMES = (
    "tts_requests_total",
    REQUEST_DURATION,
    SYNTHESIS_DURATION,
    QUEUE_WAIT,
    "tts_batch_size",
    "tts_request_segments",
    "tts_truncated_segments_total",
    "tts_queue_depth",
    "tts_active_rows",
    "tts_step_admitted_rows",
    "tts_inflight_requests",
    INFERENCE_DURATION,
    "tts_time_to_first_audio_seconds",
    "tts_cuda_memory_allocated_bytes",
    "tts_cuda_memory_reserved_bytes",
    "tts_audio_seconds_total",
    REJECTED,
    "tts_engine_errors_total",
    "tts_streams_aborted_total",
    "tts_ready",
    "tts_model_load_seconds",
    "tts_warmup_seconds",
    "tts_startup_phase_seconds",
    BUILD_INFO,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """All of the service's metrics, registered in a registry of their own."""

    def __init__(self, *, engine: str, version: str, scheduler: str = "request") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "tts_requests",
            "HTTP requests by route and outcome: the status code of a complete response; "
            "'aborted' for a stream cut off after its 200 went out (engine failure, deadline, "
            "or a client too slow to read it); 'disconnected' when the client went away first.",
            ["route", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            REQUEST_DURATION,
            "Time from request arrival to response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.synthesis_duration = Histogram(
            SYNTHESIS_DURATION,
            "Arrival to response of successful whole-file synthesis (200, not streamed), by route: "
            "the autoscaler's latency signal.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            QUEUE_WAIT,
            "Each wait of a request for the engine with none of its segments running (from arrival, "
            "and for a long text from the end of one of its batches to the next).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "tts_batch_size", "Segments per engine call.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.request_segments = Histogram(
            "tts_request_segments",
            "Segments a synthesis request's text was split into (TTS_SEGMENT_CHARS).",
            buckets=SEGMENT_BUCKETS,
            registry=r,
        )
        self.truncated_segments = Counter(
            "tts_truncated_segments",
            "Segments whose generation ended at their token budget while the model was still "
            "speaking: their audio stops there (also logged).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "tts_queue_depth", "Requests with segments waiting in the batcher's queue.", registry=r
        )
        self.active_rows = Gauge(
            "tts_active_rows",
            "Continuous scheduler: rows (segments) in the running generation at the last token step.",
            registry=r,
        )
        self.step_admitted_rows = Histogram(
            "tts_step_admitted_rows",
            "Continuous scheduler: rows admitted at each token step (sum/count: admitted per step).",
            buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32),
            registry=r,
        )
        self.inflight = Gauge(
            "tts_inflight_requests", "Synthesis requests being handled right now.", registry=r
        )
        self.inference_duration = Histogram(
            INFERENCE_DURATION,
            "Wall time of one engine call (one batch); its rate is the engine's busy fraction.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.device_memory_allocated = Gauge(
            "tts_cuda_memory_allocated_bytes",
            "CUDA memory in use by tensors after the last engine call (0 on a CPU).",
            registry=r,
        )
        self.device_memory_reserved = Gauge(
            "tts_cuda_memory_reserved_bytes",
            "CUDA memory held by torch's caching allocator after the last engine call (0 on a CPU).",
            registry=r,
        )
        self.time_to_first_audio = Histogram(
            "tts_time_to_first_audio_seconds",
            "Streamed requests: arrival to the first audio chunk.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            "tts_audio_seconds", "Seconds of audio produced (RTF = inference time / this).", registry=r
        )
        self.rejected = Counter(
            "tts_rejected", "Requests refused, by reason (the error code).", ["reason"], registry=r
        )
        self.engine_errors = Counter(
            "tts_engine_errors", "Requests the engine failed on, by error code.", ["code"], registry=r
        )
        self.streams_aborted = Counter(
            "tts_streams_aborted",
            "Streamed responses that stopped after their audio had started, by reason (the error code).",
            ["reason"],
            registry=r,
        )
        self.ready = Gauge("tts_ready", "1 when /readyz reports ready.", registry=r)
        self.model_load_seconds = Gauge(
            "tts_model_load_seconds", "Time loading the engine (model weights) took at start-up.", registry=r
        )
        self.warmup_seconds = Gauge(
            "tts_warmup_seconds",
            "Time the start-up warmup (first-call compilation, caches) took.",
            registry=r,
        )
        self.startup_phase_seconds = Gauge(
            "tts_startup_phase_seconds",
            "Time each phase of the engine's start-up took (imports, weight_verification, "
            "module_construction, weight_loading, warmup_..., as the engine records them).",
            ["phase"],
            registry=r,
        )
        self.build = Info("tts_build", "Version, engine and scheduler of this service.", registry=r)
        self.build.info({"version": version, "engine": engine, "scheduler": scheduler})

    def track_queue_depth(self, read: Callable[[], float]) -> None:
        self.queue_depth.set_function(read)

    def batch_formed(self, size: int, queue_waits_s: Sequence[float]) -> None:
        """:class:`~tts_service.batcher.BatchObserver` hook."""
        self.batch_size.observe(size)
        for wait in queue_waits_s:
            self.queue_wait.observe(wait)

    def step_taken(self, active_rows: int, admitted: int) -> None:
        """:class:`~tts_service.continuous_batcher.ContinuousBatcher`'s ``on_step`` hook."""
        self.active_rows.set(active_rows)
        self.step_admitted_rows.observe(admitted)

    def render(self) -> bytes:
        return generate_latest(self.registry)
