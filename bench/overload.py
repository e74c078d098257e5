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
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import environment  # noqa: E402
from http_load import Point, Server, closed_loop, open_loop, scrape_metrics  # noqa: E402


async def sustained_then_bursts(
    url: str, pid: int, quick: bool, multipliers: list[float], seconds: float
) -> tuple[float, list[Point]]:
    """The sustainable rate (closed loop, 32 clients), then open-loop bursts at each multiple
    of it, the queue emptied between them."""
    sustainable = (await closed_loop(url, "sustainable", 32, 64 if quick else 600)).rps
    points = []
    for multiplier in multipliers:
        points.append(
            await open_loop(
                url, f"{multiplier:g}x", sustainable * multiplier, seconds, corpus_name="mixed", pid=pid
            )
        )
        await closed_loop(url, "settle", 4, 8)  # answered only once the queue has emptied
    return sustainable, points


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


def burst_rows(points: list[Point], seconds: float) -> list[str]:
    """The bursts as Markdown table lines (header included)."""
    lines = [
        "| burst | rate req/s | seconds | sent | served | rejected 503 | timed out 504 | other | lost | "
        "bad audio | served p50 ms | served p99 ms | RSS before MB | RSS peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in points:
        lines.append(
            f"| {b.label} | {b.rate:.0f} | {seconds:g} | {b.sent} | {b.served} | {b.rejected} | "
            f"{b.timed_out} | {b.other} | {b.lost} | {b.bad_audio} | {b.pct(0.5) * 1000:.0f} | "
            f"{b.pct(0.99) * 1000:.0f} | {b.rss_mb[0][1]:.0f} | {b.rss_peak_mb:.0f} |"
        )
    return lines


def drain_line(drained: Drain) -> str:
    return (
        f"Drain: {drained.sent} long requests sent, {drained.queued} of them waiting in the queue at SIGTERM → "
        f"{drained.completed} answered with audio, {drained.failed} not; exit code {drained.exit_code} "
        f"{drained.seconds_to_exit:.1f} s after the signal."
    )


LEGEND = (
    "*lost* = no HTTP answer at all; *bad audio* = a 200 whose PCM length disagrees with X-TTS-Audio-Seconds."
)


def report(engine: str, sustainable: float, points: list[Point], seconds: float, drained: Drain) -> str:
    lines = [
        f"# kubetts overload and drain, engine `{engine}`",
        "",
        *environment.header_lines(),
        "- server: default settings (max batch 8, max wait 80 ms, queue 256, deadline 30 s); "
        "load generator on the same machine",
        f"- sustainable rate (closed loop, concurrency 32): **{sustainable:.1f} requests/s**",
        "",
        *burst_rows(points, seconds),
        "",
        drain_line(drained),
        "",
        LEGEND,
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
        await closed_loop(server.url, "warm-up", 4, 8)
        multipliers = [float(m) for m in args.multipliers.split(",")]
        sustainable, points = await sustained_then_bursts(
            server.url, server.proc.pid, args.quick, multipliers, seconds
        )
    finally:
        server.stop()
    drained = await drain(args.engine, drain_queue)

    text = report(args.engine, sustainable, points, seconds, drained)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        data = {
            "sustainable_rps": sustainable,
            "bursts": [p.summary() for p in points],
            "drain": asdict(drained),
        }
        args.out.with_suffix(".json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
