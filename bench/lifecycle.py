"""Start-up and long-run measurements: cold start, and the soak's memory slope."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from http_load import Point, Server


@dataclass
class ColdStart:
    """Seconds from process start until /readyz is 200, and until a first synthesis answered."""

    label: str
    warmup: bool
    ready_s: float
    first_audio_s: float
    first_request_s: float  # the first request's own latency, sent right after ready


async def cold_start(
    label: str, env: dict[str, str], warmup: bool, text: str = "你好，欢迎使用。"
) -> ColdStart:
    server = Server({**env, "TTS_WARMUP": "true" if warmup else "false"})
    try:
        ready = await server.wait_ready(poll_s=0.01)
        sent = time.perf_counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            body = {"input": text, "response_format": "pcm"}
            async with session.post(server.url + "/v1/audio/speech", json=body) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{label}: first synthesis answered {response.status}")
        done = time.perf_counter()
        return ColdStart(label, warmup, ready, done - server.started, done - sent)
    finally:
        server.stop()


@dataclass
class Slope:
    """A least-squares line through the RSS samples after the warm-up share of the run."""

    start_mb: float  # the line's value where the steady part begins
    end_mb: float  # ... and at the end of the run
    first_mb: float  # the first sample of the whole run
    peak_mb: float
    samples: int

    @property
    def growth_percent(self) -> float:
        return (self.end_mb - self.start_mb) / self.start_mb * 100 if self.start_mb else float("nan")


def rss_slope(point: Point, warm_share: float = 0.1) -> Slope:
    """Fit RSS against time, leaving out the first ``warm_share`` of the run (allocator pools,
    caches and import-time lazies fill up there; a leak keeps growing after it)."""
    series = point.rss_mb
    if len(series) < 3:
        raise ValueError("too few RSS samples for a slope")
    t_end = series[-1][0]
    steady = [(t, mb) for t, mb in series if t >= warm_share * t_end]
    n = len(steady)
    mean_t = sum(t for t, _ in steady) / n
    mean_m = sum(m for _, m in steady) / n
    var = sum((t - mean_t) ** 2 for t, _ in steady)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in steady) / var if var else 0.0
    t0 = steady[0][0]
    start = mean_m + slope * (t0 - mean_t)
    end = mean_m + slope * (t_end - mean_t)
    return Slope(start, end, series[0][1], point.rss_peak_mb, len(series))
