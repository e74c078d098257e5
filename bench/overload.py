"""Overload and drain at full scale: what the service does at 2x and 10x its sustainable rate,
and how long a SIGTERM drain of a full queue takes.

    .venv/bin/python bench/overload.py --out bench/results/$(date +%F)-$(hostname)-overload.md
    .venv/bin/python bench/overload.py --quick --out /tmp/overload.md   # smoke (CI)

Steps, all in one run against one server on 127.0.0.1 (default settings, engine espeak):

1. Sustainable rate: closed loop at high concurrency; requests/s served.
2. Bursts: open loop at 2x and 10x that rate for a few seconds.  Each request is sent at its
   intended time and its latency is measured from that time (coordinated-omission free).
   Every answer is classified -- 200 with audio that checks out, 503 (queue full, with
   Retry-After), 504 (deadline), other -- and anything without an answer counts as lost.
   The server's RSS is sampled from /proc during the burst.
3. Drain: fill the queue, send SIGTERM, time the exit and count how many queued requests
   still got their audio.

Figures go to a Markdown report (and a JSON file beside it); docs/reliability.md quotes them.
Nothing here is asserted by CI except that the quick variant runs and writes its report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import EN, ZH, Server, percentile, run_point, scrape_metrics  # noqa: E402

SAMPLE_BYTES = 2  # pcm: 16-bit mono


@dataclass
class Burst:
    label: str
    rate: float
    seconds: float
    sent: int = 0
    served: int = 0
    rejected: int = 0
    timed_out: int = 0
    other: int = 0
    lost: int = 0
    bad_audio: int = 0
    latencies: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    rss_before_mb: float = 0.0
    retry_after_missing: int = 0

    def pct(self, q: float) -> float:
        return percentile(self.latencies, q)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def sample_rss(pid: int, burst: Burst, stop: asyncio.Event) -> None:
    while not stop.is_set():
        burst.peak_rss_mb = max(burst.peak_rss_mb, rss_mb(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except asyncio.TimeoutError:
            pass


async def open_loop(url: str, pid: int, label: str, rate: float, seconds: float) -> Burst:
    burst = Burst(label, rate, seconds, rss_before_mb=rss_mb(pid))
    texts = ZH + EN
    count = int(rate * seconds)
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=2000)
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sampler = asyncio.create_task(sample_rss(pid, burst, stop))
        start = time.perf_counter()

        async def one(i: int) -> None:
            intended = start + i / rate
            await asyncio.sleep(max(0.0, intended - time.perf_counter()))
            burst.sent += 1
            try:
                async with session.post(
                    url + "/v1/audio/speech", json={"input": texts[i % len(texts)], "response_format": "pcm"}
                ) as response:
                    body = await response.read()
                    if response.status == 200:
                        burst.latencies.append(time.perf_counter() - intended)
                        burst.served += 1
                        seconds_claimed = float(response.headers["X-TTS-Audio-Seconds"])
                        rate_hz = int(response.headers["X-TTS-Sample-Rate"])
                        if not body or abs(len(body) / SAMPLE_BYTES / rate_hz - seconds_claimed) > 0.01:
                            burst.bad_audio += 1
                    elif response.status == 503:
                        burst.rejected += 1
                        if "Retry-After" not in response.headers:
                            burst.retry_after_missing += 1
                    elif response.status == 504:
                        burst.timed_out += 1
                    else:
                        burst.other += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                burst.lost += 1

        await asyncio.gather(*(one(i) for i in range(count)))
        stop.set()
        await sampler
    return burst


@dataclass
class Drain:
    sent: int
    queued: int
    completed: int
    failed: int
    seconds_to_exit: float
    exit_code: int | None


async def queue_depth(session: aiohttp.ClientSession, url: str) -> float:
    (depth,) = await scrape_metrics(session, url, "tts_queue_depth")
    return depth


async def drain(engine: str, queued: int) -> Drain:
    # A queue large enough for the whole burst, so every request is accepted before SIGTERM.
    server = Server(
        {"TTS_ENGINE": engine, "TTS_MAX_QUEUE_SIZE": str(queued + 8), "TTS_SHUTDOWN_TIMEOUT_S": "120"}
    )
    try:
        await server.wait_ready()
        # Long enough that the queue builds up faster than the engine empties it.
        text = "This queued request must still be answered after the signal. " * 15
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:

            async def one() -> int:
                try:
                    async with session.post(
                        server.url + "/v1/audio/speech", json={"input": text, "response_format": "pcm"}
                    ) as response:
                        await response.read()
                        return response.status
                except aiohttp.ClientError:
                    return 0

            tasks = [asyncio.create_task(one()) for _ in range(queued)]
            deadline = time.monotonic() + 60
            async with aiohttp.ClientSession() as probe:
                depth = 0.0
                while depth < queued // 2 and time.monotonic() < deadline:
                    depth = await queue_depth(probe, server.url)
                    await asyncio.sleep(0.01)  # polling a condition, bounded by the deadline
            signalled = time.perf_counter()
            server.proc.send_signal(signal.SIGTERM)
            statuses = await asyncio.gather(*tasks)
            code = await asyncio.to_thread(server.proc.wait, 180)
            took = time.perf_counter() - signalled
        return Drain(queued, int(depth), statuses.count(200), queued - statuses.count(200), took, code)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def report(engine: str, sustainable: float, bursts: list[Burst], drained: Drain, command: str) -> str:
    now = datetime.now(timezone.utc)
    lines = [
        f"# kubetts overload and drain, engine `{engine}`",
        "",
        f"- date: {now:%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}",
        f"- command: `{command}`",
        "- server: default settings (max batch 8, max wait 80 ms, queue 256, deadline 30 s); "
        "load generator on the same machine",
        f"- sustainable rate (closed loop, concurrency 32): **{sustainable:.1f} requests/s**",
        "",
        "| burst | rate req/s | seconds | sent | served | rejected 503 | timed out 504 | other | lost | "
        "bad audio | served p50 ms | served p99 ms | RSS before MB | RSS peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in bursts:
        lines.append(
            f"| {b.label} | {b.rate:.0f} | {b.seconds:.0f} | {b.sent} | {b.served} | {b.rejected} | "
            f"{b.timed_out} | {b.other} | {b.lost} | {b.bad_audio} | {b.pct(0.5) * 1000:.0f} | "
            f"{b.pct(0.99) * 1000:.0f} | {b.rss_before_mb:.0f} | {b.peak_rss_mb:.0f} |"
        )
    lines += [
        "",
        f"Drain: {drained.sent} long requests sent, {drained.queued} of them waiting in the queue at SIGTERM → "
        f"{drained.completed} answered with audio, {drained.failed} not; exit code {drained.exit_code} "
        f"{drained.seconds_to_exit:.1f} s after the signal.",
        "",
        "*lost* = no HTTP answer at all; *bad audio* = a 200 whose PCM length disagrees with X-TTS-Audio-Seconds.",
        "",
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="espeak")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each burst")
    parser.add_argument("--multipliers", default="2,10")
    parser.add_argument("--drain-queue", type=int, default=100, help="long requests sent before SIGTERM")
    parser.add_argument("--quick", action="store_true", help="short bursts and a small drain (smoke test)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    drain_queue = 16 if args.quick else args.drain_queue

    server = Server({"TTS_ENGINE": args.engine})
    try:
        await server.wait_ready()
        await run_point(server.url, "warm-up", 4, 8, 1)
        closed = await run_point(server.url, "sustainable", 32, 64 if args.quick else 600, 7)
        sustainable = closed.rps
        bursts = []
        for multiplier in (float(m) for m in args.multipliers.split(",")):
            bursts.append(
                await open_loop(
                    server.url, server.proc.pid, f"{multiplier:g}x", sustainable * multiplier, seconds
                )
            )
            await run_point(server.url, "settle", 4, 8, 1)  # the queue has emptied before the next burst
    finally:
        server.stop()
    drained = await drain(args.engine, drain_queue)

    command = " ".join([Path(sys.executable).name, *sys.argv])
    text = report(args.engine, sustainable, bursts, drained, command)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        data = {
            "sustainable_rps": sustainable,
            "bursts": [
                {**asdict(b), "latencies": None, "p50": b.pct(0.5), "p99": b.pct(0.99)} for b in bursts
            ],
            "drain": asdict(drained),
        }
        args.out.with_suffix(".json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
