"""Closed-loop HTTP load against kubetts: requests/s and latency percentiles per concurrency.

Two ways to run it:

    # against a service you started yourself
    .venv/bin/python bench/http_load.py --url http://127.0.0.1:8080 --concurrency 1,4,16

    # start the service twice on 127.0.0.1 -- batching on (defaults) and off (max batch 1) --
    # and measure both in one run, so the ratio is trustworthy on a noisy machine
    .venv/bin/python bench/http_load.py --compare --out bench/results/$(date +%F)-$(hostname).md

Each client sends its next request when the previous one answered (closed loop), texts from
a fixed-seed corpus of short Chinese sentences (~12 characters, the write-up's test) and
English ones.  The mean batch size comes from the service's own metrics.  This is the
first, small benchmark; the full suite (open loop, cold start, soak, overload) is its own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

ZH = [
    "今天天气很好我们去公园吧",
    "请在下一个路口向左转弯",
    "会议将在明天上午十点开始",
    "这个价格是123元可以吗",
    "我的电话是13812345678",
    "欢迎使用语音合成服务谢谢",
    "春天来了花儿都开了很美",
    "火车站离这里有多远呢",
]
EN = [
    "The weather is nice today.",
    "Please call me back tomorrow.",
    "Turn left at the next corner.",
    "The meeting starts at ten.",
]


@dataclass
class Point:
    label: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    audio_seconds: float
    mean_batch: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        return percentile(self.latencies, q)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank); NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def scrape_metrics(session: aiohttp.ClientSession, url: str, *names: str) -> list[float]:
    """The values of unlabelled series ``names`` on the service's /metrics (0 when absent)."""
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    values = []
    for name in names:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        values.append(float(match.group(1)) if match else 0.0)
    return values


async def scrape_batches(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    total, count = await scrape_metrics(session, url, "tts_batch_size_sum", "tts_batch_size_count")
    return total, count


async def run_point(url: str, label: str, concurrency: int, total: int, seed: int) -> Point:
    rng = random.Random(seed)
    texts = [rng.choice(ZH + EN) for _ in range(total)]
    latencies: list[float] = []
    errors = 0
    audio = 0.0
    next_index = 0
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        items_before, batches_before = await scrape_batches(session, url)

        async def client() -> None:
            nonlocal next_index, errors, audio
            while next_index < total:
                text = texts[next_index]
                next_index += 1
                started = time.perf_counter()
                async with session.post(
                    url + "/v1/audio/speech", json={"input": text, "response_format": "pcm"}
                ) as response:
                    await response.read()
                    if response.status == 200:
                        latencies.append(time.perf_counter() - started)
                        audio += float(response.headers.get("X-TTS-Audio-Seconds", 0))
                    else:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        items_after, batches_after = await scrape_batches(session, url)
    batches = batches_after - batches_before
    mean_batch = (items_after - items_before) / batches if batches else float("nan")
    return Point(label, concurrency, len(latencies), errors, elapsed, latencies, audio, mean_batch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The service as a subprocess on 127.0.0.1, stopped with SIGTERM."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tts_service"],
            env={
                **os.environ,
                **env,
                "TTS_HOST": "127.0.0.1",
                "TTS_PORT": str(self.port),
                "TTS_LOG_LEVEL": "WARNING",
            },
        )

    async def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited with {self.proc.returncode}")
                try:
                    async with session.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("service did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def table(points: list[Point]) -> str:
    rows = [
        "| setup | concurrency | requests | errors | req/s | audio s/s | p50 ms | p90 ms | p99 ms | max ms | mean batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        rows.append(
            f"| {p.label} | {p.concurrency} | {p.requests} | {p.errors} | {p.rps:.1f} | "
            f"{p.audio_seconds / p.seconds:.1f} | {p.pct(0.5) * 1000:.0f} | {p.pct(0.9) * 1000:.0f} | "
            f"{p.pct(0.99) * 1000:.0f} | {max(p.latencies, default=0) * 1000:.0f} | {p.mean_batch:.2f} |"
        )
    return "\n".join(rows)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running service (default: start one, see --compare)")
    parser.add_argument("--compare", action="store_true", help="batching on vs off, each in its own server")
    parser.add_argument("--engine", default="espeak")
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--requests", type=int, default=200, help="requests per point")
    parser.add_argument("--quick", action="store_true", help="a few requests per point (smoke test)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write a Markdown report here")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    total = 12 if args.quick else args.requests

    points: list[Point] = []
    if args.url:
        for c in levels:
            points.append(await run_point(args.url, "given", c, max(total, c), args.seed))
    else:
        setups = [("batching on (8, 80 ms)", {})]
        if args.compare:
            setups.append(("batching off (1)", {"TTS_MAX_BATCH_SIZE": "1"}))
        for label, env in setups:
            server = Server({"TTS_ENGINE": args.engine, **env})
            try:
                await server.wait_ready()
                await run_point(server.url, "warm-up", 2, 4, args.seed)
                for c in levels:
                    points.append(await run_point(server.url, label, c, max(total, c), args.seed))
            finally:
                server.stop()

    report = table(points)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        now = datetime.now(timezone.utc)
        header = (
            f"# kubetts HTTP load, engine `{args.engine}`\n\n"
            f"- date: {now:%Y-%m-%d %H:%M} UTC\n"
            f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}\n"
            f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`\n"
            f"- closed loop, {total} requests per point, corpus: short zh sentences + short en sentences, seed {args.seed}\n\n"
        )
        args.out.write_text(header + report + "\n")
        args.out.with_suffix(".json").write_text(
            json.dumps(
                [
                    {
                        "setup": p.label,
                        "concurrency": p.concurrency,
                        "requests": p.requests,
                        "errors": p.errors,
                        "rps": p.rps,
                        "p50": p.pct(0.5),
                        "p99": p.pct(0.99),
                        "mean_batch": p.mean_batch,
                    }
                    for p in points
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
