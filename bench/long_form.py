"""Long-form speech: one long text, and a mix of short and long requests, segmented or not.

    .venv/bin/python bench/long_form.py --out bench/results/$(date +%F)-$(hostname)-long-form.md
    .venv/bin/python bench/long_form.py --quick --out /tmp/long-form.md   # smoke (CI)

All on the ChatTTS engine with random weights (tests/chattts_checkpoint.py; the tiny geometry
unless ``--full-size``), every server on 127.0.0.1, two servers measured in one run:

* **segmented** -- the defaults (``TTS_SEGMENT_CHARS=100``): a long text is spoken in
  segments that are batched across requests;
* **one generation** -- ``TTS_SEGMENT_CHARS=4096``: the whole text is one row of one
  generation, bounded by ``TTS_MAX_NEW_TOKENS`` (2048) as before segmentation.

Token budgets are the real ones (48 + 12 per character, capped at 2048), and
``TTS_MIN_NEW_TOKENS=2048`` makes every row run to its own budget (random weights would stop
at random): the work is a real checkpoint's worst case, the same in every run.

1. **A 1000-character Chinese text**, whole and streamed, one request at a time: total time,
   time to first audio, seconds of audio produced (one generation cannot say it all),
   segments cut at their budget.
2. **A 90 % short / 10 % long mix**, open loop (each latency from the intended send time):
   short requests' p50/p99 with the long ones and without them (the same short requests at
   the same times), on both servers.  The rate is set from a calibration run so that the
   engine is busy but not overloaded; its busy fraction is reported.

Nothing here is asserted; the report says what each ratio means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkpoints  # noqa: E402
import environment  # noqa: E402
from http_load import ZH, Server, percentile, scrape_metrics  # noqa: E402

SENTENCES = [
    "今天天气很好，我们一起去公园散步吧。",
    "春天来了，花园里的花都开了，红的、黄的、白的，非常好看。",
    "小明每天早上七点起床，先跑步，再吃早饭，然后去学校上课。",
    "这家餐厅的菜很好吃，价格也不贵，所以每到周末都有很多人。",
    "会议改到明天下午三点，请大家提前十分钟到会议室。",
    "火车站离这里不远，走路大概需要十五分钟。",
]
SPEECH = "/v1/audio/speech"


def long_text(chars: int) -> str:
    text, i = "", 0
    while len(text) < chars:
        text += SENTENCES[i % len(SENTENCES)]
        i += 1
    return text[:chars]


@dataclass
class Answer:
    kind: str  # "short" or "long"
    status: int
    seconds: float  # from the intended send time to the last byte
    first_audio: float | None = None  # streamed: to the first non-empty chunk
    audio_seconds: float = 0.0


async def speak(
    session: aiohttp.ClientSession, url: str, text: str, kind: str, stream: bool, t0: float
) -> Answer:
    body = {"input": text, "response_format": "pcm", "stream": stream}
    first, size = None, 0
    try:
        async with session.post(url + SPEECH, json=body) as response:
            async for data in response.content.iter_any():
                if data and first is None:
                    first = time.perf_counter() - t0
                size += len(data)
            status = response.status
    except aiohttp.ClientError:
        status = 0
    return Answer(kind, status, time.perf_counter() - t0, first, size / 2 / 24_000)


async def metric_values(url: str, *names: str) -> list[float]:
    async with aiohttp.ClientSession() as session:
        return await scrape_metrics(session, url, *names)


@dataclass
class LongText:
    server: str
    mode: str  # "whole" or "stream"
    runs: int
    seconds: float  # median total time
    first_audio: float | None  # median time to first audio (streamed)
    audio_seconds: float
    segments: float  # per request
    truncated: float  # segments cut at their budget, per request


async def long_text_runs(server: str, url: str, text: str, runs: int) -> list[LongText]:
    results = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        for mode in ("whole", "stream"):
            before = await metric_values(url, "tts_request_segments_sum", "tts_truncated_segments_total")
            answers = [
                await speak(session, url, text, "long", mode == "stream", time.perf_counter())
                for _ in range(runs)
            ]
            after = await metric_values(url, "tts_request_segments_sum", "tts_truncated_segments_total")
            assert all(a.status == 200 for a in answers), [a.status for a in answers]
            firsts = [a.first_audio for a in answers if a.first_audio is not None]
            results.append(
                LongText(
                    server,
                    mode,
                    runs,
                    statistics.median(a.seconds for a in answers),
                    statistics.median(firsts) if mode == "stream" else None,
                    statistics.median(a.audio_seconds for a in answers),
                    (after[0] - before[0]) / runs,
                    (after[1] - before[1]) / runs,
                )
            )
    return results


@dataclass
class Mix:
    server: str
    label: str
    rate: float
    seconds: float
    sent: dict[str, int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    p50: dict[str, float] = field(default_factory=dict)
    p99: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0  # engine busy fraction over the run


def schedule(rate: float, seconds: float, long_share: float, seed: int) -> list[tuple[float, str]]:
    """(send offset, kind) for every request: the same short requests at the same times in every run."""
    rng = random.Random(seed)
    return [(i / rate, "long" if rng.random() < long_share else "short") for i in range(int(rate * seconds))]


async def mix_run(
    server: str, url: str, label: str, plan: list[tuple[float, str]], text: str, rate: float
) -> Mix:
    shorts = random.Random(11)
    texts = [text if kind == "long" else shorts.choice(ZH) for _, kind in plan]
    (busy_before,) = await metric_values(url, "tts_inference_duration_seconds_sum")
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=3600), connector=aiohttp.TCPConnector(limit=1000)
    ) as session:
        start = time.perf_counter()

        async def one(offset: float, kind: str, text: str) -> Answer:
            intended = start + offset
            await asyncio.sleep(max(0.0, intended - time.perf_counter()))
            return await speak(session, url, text, kind, False, intended)

        answers = await asyncio.gather(*(one(o, k, t) for (o, k), t in zip(plan, texts, strict=True)))
        wall = time.perf_counter() - start
    (busy_after,) = await metric_values(url, "tts_inference_duration_seconds_sum")
    mix = Mix(server, label, rate, wall, busy=(busy_after - busy_before) / wall)
    for kind in ("short", "long"):
        mine = [a for a in answers if a.kind == kind]
        if not mine:
            continue
        ok = [a.seconds for a in mine if a.status == 200]
        mix.sent[kind], mix.served[kind] = len(mine), len(ok)
        mix.p50[kind], mix.p99[kind] = percentile(ok, 0.5), percentile(ok, 0.99)
    return mix


def chattts_env(checkpoint: Path, segment_chars: int) -> dict[str, str]:
    return {
        **checkpoints.chattts_env(checkpoint),
        "TTS_MIN_NEW_TOKENS": "2048",  # every row runs to its own budget
        "TTS_SEGMENT_CHARS": str(segment_chars),
        "TTS_REQUEST_TIMEOUT_S": "1800",
        "TTS_MAX_QUEUE_SIZE": "1000",
    }


SERVERS = {"segmented": 100, "one generation": 4096}


async def calibrate(url: str, text: str) -> tuple[float, float]:
    """Seconds the engine needs for one short request (8 at once) and for one long one alone."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(speak(session, url, ZH[i], "short", False, t0) for i in range(8)))
        short = (time.perf_counter() - t0) / 8
        t0 = time.perf_counter()
        await speak(session, url, text, "long", False, t0)
        return short, time.perf_counter() - t0


async def run(args) -> dict:
    checkpoint = Path(args.checkpoint)
    text = long_text(args.chars)
    data: dict = {"long_text": [], "mix": [], "chars": args.chars}
    plan = None
    for name, segment_chars in SERVERS.items():
        server = Server(chattts_env(checkpoint, segment_chars))
        try:
            await server.wait_ready()
            if plan is None:  # calibrated on the segmented server: the mix offers ~60 % of its capacity
                short_s, long_s = await calibrate(server.url, text)
                per_request = 0.9 * short_s + 0.1 * long_s
                rate = args.load / per_request
                plan = schedule(rate, args.seconds, 0.1, seed=5)
                data["calibration"] = {"short_s": short_s, "long_s": long_s, "rate": rate}
            data["long_text"] += [asdict(r) for r in await long_text_runs(name, server.url, text, args.runs)]
            rate = data["calibration"]["rate"]
            shorts_only = [(o, k) for o, k in plan if k == "short"]
            data["mix"].append(asdict(await mix_run(name, server.url, "short only", shorts_only, text, rate)))
            data["mix"].append(asdict(await mix_run(name, server.url, "90/10 mix", plan, text, rate)))
        finally:
            server.stop()
    return data


def report(data: dict, args) -> str:
    cal = data["calibration"]
    lines = [
        "# kubetts long-form speech: segmentation, cross-request batching, fairness",
        "",
        *environment.header_lines(),
        f"- engine: ChatTTS, random weights, {'official' if args.full_size else 'tiny'} geometry "
        "(tests/chattts_checkpoint.py), torch threads = CPUs; real token budgets (48 + 12 per character, "
        "cap 2048), rows run to their budget",
        f"- long text: {data['chars']} Chinese characters; short texts: bench/http_load.py's zh corpus (~12 characters)",
        f"- calibration on the segmented server: {cal['short_s']:.2f} s per short request (8 at once), "
        f"{cal['long_s']:.1f} s for one long request alone → mix rate {cal['rate']:.2f} req/s "
        f"(~{args.load:.0%} of capacity), {args.seconds:g} s",
        "",
        "## One long text, one request at a time",
        "",
        "| server | answer | total s | first audio s | audio s | segments | cut at budget |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["long_text"]:
        first = f"{r['first_audio']:.2f}" if r["first_audio"] is not None else "–"
        lines.append(
            f"| {r['server']} | {r['mode']} | {r['seconds']:.1f} | {first} | {r['audio_seconds']:.1f} | "
            f"{r['segments']:.0f} | {r['truncated']:.0f} |"
        )
    lines += [
        "",
        "## 90 % short / 10 % long, open loop",
        "",
        "| server | load | sent short/long | served short/long | short p50 s | short p99 s | long p50 s | engine busy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in data["mix"]:
        sent = f"{m['sent'].get('short', 0)}/{m['sent'].get('long', 0)}"
        served = f"{m['served'].get('short', 0)}/{m['served'].get('long', 0)}"
        long50 = f"{m['p50']['long']:.1f}" if "long" in m["p50"] else "–"
        lines.append(
            f"| {m['server']} | {m['label']} | {sent} | {served} | {m['p50']['short']:.2f} | "
            f"{m['p99']['short']:.2f} | {long50} | {m['busy']:.0%} |"
        )
    mixes = {(m["server"], m["label"]): m for m in data["mix"]}
    lt = {(r["server"], r["mode"]): r for r in data["long_text"]}
    seg, one = "segmented", "one generation"
    ratios = {
        "short p99, mix / short only (segmented)": mixes[seg, "90/10 mix"]["p99"]["short"]
        / mixes[seg, "short only"]["p99"]["short"],
        "short p99, mix / short only (one generation)": mixes[one, "90/10 mix"]["p99"]["short"]
        / mixes[one, "short only"]["p99"]["short"],
        "audio spoken, one generation / segmented": lt[one, "whole"]["audio_seconds"]
        / lt[seg, "whole"]["audio_seconds"],
        "first audio, segmented / one generation (stream)": lt[seg, "stream"]["first_audio"]
        / lt[one, "stream"]["first_audio"],
    }
    data["ratios"] = ratios
    lines += ["", "## Ratios (same run)", "", "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
    lines += [
        "",
        "*audio s*: seconds of speech in the answer (the whole text is ~200-250 s of Mandarin at a real "
        "model's pace; with random weights every row runs to its budget). *cut at budget*: segments whose "
        "generation ended at its token budget (`tts_truncated_segments_total`); with random weights that is "
        "every row, with real weights only runaway ones. *short p99*: latency of the short requests from "
        "their intended send time; the short requests and their send times are the same in both loads.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chars", type=int, default=1000, help="length of the long text")
    parser.add_argument("--runs", type=int, default=3, help="long-text requests per answer mode")
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each mix run")
    parser.add_argument("--load", type=float, default=0.6, help="offered load as a share of capacity")
    parser.add_argument("--full-size", action="store_true", help="the official geometry (slow on a CPU)")
    parser.add_argument("--quick", action="store_true", help="a short text and short runs (smoke test)")
    parser.add_argument(
        "--checkpoint", help="an existing checkpoint directory (default: built under .cache/)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.chars, args.runs, args.seconds = 250, 1, 8.0
    cache = ROOT / ".cache" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is None:
        args.checkpoint = str(checkpoints.ensure_checkpoint(args.full_size, cache))
    data = asyncio.run(run(args))
    text = report(data, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
