"""The benchmark suite: every scenario, side by side in ONE invocation, so ratios are trustworthy.

    ./dev bench            # the whole suite (~30 min on 2 cores): bench/results/<date>-<machine>.md + PNGs
    ./dev bench --quick    # the smoke variant (< 2 min): tiny ChatTTS checkpoint, few requests

Scenarios (each server on 127.0.0.1, started and stopped here):

1. Batching on (defaults: 8 / 80 ms) vs off (max batch 1), on espeak and on ChatTTS with
   random weights of the real architecture on this CPU (every request exactly
   ``--chattts-tokens`` audio tokens: TTS_MIN_NEW_TOKENS = TTS_MAX_NEW_TOKENS).  Closed-loop
   sweep over client counts, a mixed-corpus point, open-loop points at fractions of the
   best closed-loop rate (latency from the intended send time), and for ChatTTS a streamed
   point (time to first byte).
2. The engine alone, in-process (bench/engine_offline.py) at batch sizes 1..8; for ChatTTS
   8 single calls vs one batch of 8 at 64 and 256 tokens.  Then the server (batching on, at
   its highest client count) as a percentage of the engine alone at batch 8, measured in
   alternating windows next to each other (the machine's speed drifts; see ``interleaved``).
3. Cold start: process start -> /readyz 200 and -> first synthesis, with and without warmup.
4. Soak: 20 000 requests open loop at 60 % of espeak's best rate, server RSS sampled every
   0.1 s; the least-squares line through the second half is the memory growth (the first
   half is where the allocator reaches its high-water mark; a leak grows in both).
5. Overload: open-loop bursts at 2x and 10x the sustainable rate (bench/overload.py's).

Writes ``<out-dir>/<date>-<machine>.md`` (``-quick`` added for --quick), a ``.json`` beside it
with every figure, and three PNGs.  Nothing is asserted here; the report's "Expectations"
section compares the ratios with what we expect and says which held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weights checkpoint builder

import checkpoints  # noqa: E402
import environment  # noqa: E402
import overload  # noqa: E402
import plots  # noqa: E402
from http_load import Point, Server, closed_loop, open_loop, table  # noqa: E402
from lifecycle import ColdStart, cold_start, rss_slope  # noqa: E402

ON, OFF = "batching on (8, 80 ms)", "batching off (1)"
STEADY_FROM = 0.5  # the soak's memory slope is fitted from this share of the run on
EARLY_FROM = 0.1  # ... and, for comparison in the report, from this one


@dataclass
class Pairing:
    """How the server and the engine alone are measured next to each other."""

    clients: int  # the server's closed-loop clients (its highest load)
    requests: int  # per server window
    items: int  # per engine-alone window, in calls of 8
    rounds: int


@dataclass
class Plan:
    """How much of everything to run: the full suite or the quick smoke."""

    quick: bool
    espeak_levels: list[int]
    espeak_requests: int
    chattts_levels: dict[str, list[int]]
    chattts_min_requests: int  # per closed-loop point
    chattts_rounds: dict[
        str, int
    ]  # requests per client per point (batching on needs 2 to reach steady state)
    chattts_tokens: int
    open_fractions: list[float]
    open_seconds: float
    chattts_open_seconds: float
    soak_requests: int
    burst_seconds: float
    offline_items: dict[str, int] = field(default_factory=dict)
    pairing: dict[str, Pairing] = field(default_factory=dict)

    @classmethod
    def full(cls, tokens: int) -> Plan:
        return cls(
            quick=False,
            espeak_levels=[1, 2, 4, 8, 16, 32, 64],
            espeak_requests=400,
            chattts_levels={ON: [1, 8, 32], OFF: [1, 32]},
            chattts_min_requests=8,
            chattts_rounds={ON: 2, OFF: 1},
            chattts_tokens=tokens,
            open_fractions=[0.3, 0.5, 0.7, 0.9],
            open_seconds=10.0,
            chattts_open_seconds=60.0,
            soak_requests=20_000,
            burst_seconds=10.0,
            offline_items={"espeak": 400, "chattts": 8},
            pairing={"espeak": Pairing(64, 400, 400, 5), "chattts": Pairing(32, 32, 16, 3)},
        )

    @classmethod
    def smoke(cls) -> Plan:
        return cls(
            quick=True,
            espeak_levels=[1, 8],
            espeak_requests=16,
            chattts_levels={ON: [1, 8], OFF: [8]},
            chattts_min_requests=4,
            chattts_rounds={ON: 1, OFF: 1},
            chattts_tokens=16,
            open_fractions=[0.7],
            open_seconds=1.0,
            chattts_open_seconds=3.0,
            soak_requests=300,
            burst_seconds=1.0,
            offline_items={"espeak": 40, "chattts": 4},
            pairing={"espeak": Pairing(8, 40, 40, 1), "chattts": Pairing(8, 8, 8, 1)},
        )


STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.0f} s] {message}", flush=True)


# -- servers --------------------------------------------------------------------------------------


def chattts_env(checkpoint: Path, tokens: int) -> dict[str, str]:
    return {
        **checkpoints.chattts_env(checkpoint),
        "TTS_MAX_NEW_TOKENS": str(tokens),
        "TTS_MIN_NEW_TOKENS": str(tokens),  # the same work for every request
        "TTS_REQUEST_TIMEOUT_S": "1800",  # unbatched ChatTTS at 32 clients queues for minutes
    }


async def sweep(engine: str, label: str, env: dict[str, str], plan: Plan) -> list[Point]:
    """One server: closed-loop sweep, a mixed-corpus point, open-loop points; all on its pid."""
    chattts = engine == "chattts"
    levels = plan.chattts_levels[label] if chattts else plan.espeak_levels
    server = Server(env)
    points: list[Point] = []
    try:
        await server.wait_ready()
        pid = server.proc.pid
        await closed_loop(server.url, "warm-up", 2, 4 if chattts else 16)
        for c in levels:
            total = (
                max(plan.chattts_min_requests, plan.chattts_rounds[label] * c)
                if chattts
                else max(c, plan.espeak_requests)
            )
            points.append(await closed_loop(server.url, label, c, total, pid=pid))
            progress(f"  {engine} {label} {c} clients: {points[-1].rps:.3g} req/s")
        if chattts and label == ON:
            # Streamed: the first audio leaves after ChatTTS's first 24 tokens, not at the end.
            points.append(await closed_loop(server.url, label, 8, 8, stream=True, pid=pid))
        if not chattts:
            # Every ChatTTS request makes the same number of tokens whatever its text; for
            # espeak the text matters, so the highest load once more on the mixed corpus.
            top = levels[-1]
            points.append(
                await closed_loop(
                    server.url, label, top, max(top, plan.espeak_requests), corpus_name="mixed", pid=pid
                )
            )
        best = _best_closed(points, label)
        fractions = [0.7] if chattts else plan.open_fractions
        seconds = plan.chattts_open_seconds if chattts else plan.open_seconds
        for fraction in fractions:
            points.append(await open_loop(server.url, label, fraction * best, seconds, pid=pid))
            progress(f"  {engine} {label} open {fraction:.0%}: p50 {points[-1].pct(0.5):.3f} s")
    finally:
        server.stop()
    return points


class EngineAlone:
    """bench/engine_offline.py --serve: a loaded engine in its own process, run on request."""

    def __init__(self, env: dict[str, str], join: int = 1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "engine_offline.py"), "--serve", "--join", str(join)],
            env={**os.environ, "TTS_LOG_LEVEL": "ERROR", **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.description = self._answer()

    def _answer(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"engine_offline.py --serve exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, batch_size: int, items: int) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"batch_size": batch_size, "items": items}) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def sweep(self, sizes: list[int], items: int) -> dict:
        """The same ``items`` texts at each batch size in turn, with the engine's description."""
        return {**self.description, "results": [self.run(size, items) for size in sizes]}

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def beside_the_server(
    engine: str, env: dict[str, str], sizes: list[int], items: int, pairing: Pairing
) -> tuple[dict, dict]:
    """The engine alone at each batch size in ``sizes``; then the server (batching on) as a
    share of the engine alone at batch 8, window by window.

    Both processes stay loaded (they load side by side); each round measures the engine
    alone, then the server right after it, while the other one idles.  On this shared VM the same engine-alone run gives
    120-210 items/s for espeak within minutes, so a ratio of figures taken at different
    times says more about the machine than about the server; the median of adjacent pairs
    does not.
    """
    chattts = engine == "chattts"
    server = Server(env)
    alone: EngineAlone | None = None
    rounds = []
    try:
        alone = EngineAlone(env)  # loads while the server does
        sweep = alone.sweep(sizes, items)
        await server.wait_ready()
        await closed_loop(server.url, "warm-up", 2, 4 if chattts else 16)
        for _ in range(pairing.rounds):
            by_itself = alone.run(8, pairing.items)
            point = await closed_loop(server.url, ON, pairing.clients, pairing.requests, pid=server.proc.pid)
            rounds.append(
                {
                    "engine_items_per_second": by_itself["items_per_second"],
                    "server_requests_per_second": point.rps,
                    "server_mean_batch": point.mean_batch,
                    "server_errors": point.errors,
                    "share_percent": point.rps / by_itself["items_per_second"] * 100,
                }
            )
            progress(f"  {engine}: server at {rounds[-1]['share_percent']:.0f} % of the engine alone")
    finally:
        server.stop()
        if alone is not None:
            alone.close()
    shares = sorted(r["share_percent"] for r in rounds)
    paired = {
        "clients": pairing.clients,
        "requests": pairing.requests,
        "items": pairing.items,
        "rounds": rounds,
        "median_share_percent": statistics.median(shares),
    }
    return sweep, paired


# -- the run ----------------------------------------------------------------------------------------


async def run(plan: Plan, cache: Path) -> dict:
    checkpoint = checkpoints.ensure_checkpoint(full_size=not plan.quick, cache=cache)
    espeak_env = {"TTS_ENGINE": "espeak"}
    chat_env = chattts_env(checkpoint, plan.chattts_tokens)
    off = {"TTS_MAX_BATCH_SIZE": "1"}
    data: dict = {
        "plan": asdict(plan),
        "checkpoint": "tiny" if plan.quick else "official geometry, random weights",
    }

    progress("1. batching on vs off")
    points = {
        "espeak": await sweep("espeak", ON, espeak_env, plan)
        + await sweep("espeak", OFF, {**espeak_env, **off}, plan),
        "chattts": await sweep("chattts", ON, chat_env, plan)
        + await sweep("chattts", OFF, {**chat_env, **off}, plan),
    }

    progress("2. the engine alone, and the server beside it")
    engine_alone: dict[str, dict] = {}
    paired: dict[str, dict] = {}
    for engine, env, sizes in (("espeak", espeak_env, [1, 8]), ("chattts", chat_env, [1, 2, 4, 8])):
        engine_alone[engine], paired[engine] = await beside_the_server(
            engine, env, sizes, plan.offline_items[engine], plan.pairing[engine]
        )
    long_tokens = 4 * plan.chattts_tokens
    if not plan.quick:  # ChatTTS at 4x the tokens: does batching pay the same on longer outputs?
        # ~36 characters per text: a budget above the cap, so every item makes exactly the cap
        alone = EngineAlone(chattts_env(checkpoint, long_tokens), join=3)
        try:
            engine_alone["chattts_long"] = alone.sweep([1, 8], plan.offline_items["chattts"])
        finally:
            alone.close()

    progress("3. cold start")
    starts = [
        await cold_start(name, env, warmup)
        for name, env in (("espeak", espeak_env), ("chattts", chat_env))
        for warmup in (True, False)
    ]

    progress("4. soak")
    best_espeak = _best_closed(points["espeak"], ON)
    server = Server(espeak_env)
    try:
        await server.wait_ready()
        await closed_loop(server.url, "warm-up", 8, 200, corpus_name="mixed")
        soak_rate = 0.6 * best_espeak
        soak = await open_loop(
            server.url,
            "soak",
            soak_rate,
            plan.soak_requests / soak_rate,
            corpus_name="mixed",
            pid=server.proc.pid,
        )
    finally:
        server.stop()
    slope = rss_slope(soak, STEADY_FROM)

    progress("5. overload")
    server = Server(espeak_env)
    try:
        await server.wait_ready()
        await closed_loop(server.url, "warm-up", 4, 16)
        sustainable, bursts = await overload.sustained_then_bursts(
            server.url, server.proc.pid, plan.quick, [2.0, 10.0], plan.burst_seconds
        )
    finally:
        server.stop()

    data.update(
        points={k: [p.summary() for p in v] for k, v in points.items()},
        engine_alone=engine_alone,
        server_vs_engine=paired,
        cold_start=[asdict(s) for s in starts],
        soak={**soak.summary(), "slope": {**asdict(slope), "growth_percent": slope.growth_percent}},
        overload={"sustainable_rps": sustainable, "bursts": [b.summary() for b in bursts]},
    )
    data["expectations"] = expectations(points, engine_alone, paired, soak, slope)
    data["_objects"] = (points, starts, soak, slope, bursts)
    return data


# -- what the figures say ----------------------------------------------------------------------------


def _at(points: list[Point], label: str, concurrency: int, corpus: str = "zh") -> Point:
    return next(
        p
        for p in points
        if p.label == label
        and p.mode == "closed"
        and p.concurrency == concurrency
        and p.corpus == corpus
        and not p.stream
    )


def _best_closed(points: list[Point], label: str) -> float:
    """The highest requests/s of a setup's whole-file closed-loop points (open-loop rates are fractions of it)."""
    return max(p.rps for p in points if p.label == label and p.mode == "closed" and not p.stream)


def _speedup(alone: dict, size: int = 8) -> float:
    by = {r["batch_size"]: r for r in alone["results"]}
    return by[size]["items_per_second"] / by[1]["items_per_second"]


def expectations(points: dict[str, list[Point]], alone: dict, paired: dict, soak: Point, slope) -> list[dict]:
    """Each expectation from the benchmark issue: the figure, the bound, whether it held."""
    checks = []

    def check(what: str, value: float, bound: str, held: bool) -> None:
        checks.append({"what": what, "value": value, "bound": bound, "held": bool(held)})

    for key, tokens in (("chattts", "short"), ("chattts_long", "long")):
        if key not in alone:
            continue
        n = alone[key]["max_new_tokens"]
        check(
            f"ChatTTS engine alone: one batch of 8 vs 8 single calls, {n} tokens ({tokens})",
            _speedup(alone[key]),
            "~2-2.5x faster",
            _speedup(alone[key]) >= 2.0,
        )
    for engine in ("chattts", "espeak"):
        pair = paired[engine]
        share = pair["median_share_percent"]
        check(
            f"{engine}: server, batching on, {pair['clients']} clients, as % of the engine alone at "
            f"batch 8 (median of {len(pair['rounds'])} adjacent pairs)",
            share,
            ">= 90 %",
            share >= 90,
        )
    top = max(p.concurrency for p in points["chattts"] if p.label == OFF)
    ratio = _at(points["chattts"], ON, top).rps / _at(points["chattts"], OFF, top).rps
    check(f"chattts: server batching on vs off at {top} clients (requests/s)", ratio, ">= 2.5x", ratio >= 2.5)
    for engine in ("espeak", "chattts"):
        for label in (ON, OFF):
            at70 = [p for p in points[engine] if p.label == label and p.mode == "open"]
            best = _best_closed(points[engine], label)
            for p in at70:
                if abs(p.rate / best - 0.7) < 0.01:
                    ratio = p.pct(0.99) / p.pct(0.5)
                    check(
                        f"{engine} {label}: p99 / p50 at 70 % of max throughput (open loop)",
                        ratio,
                        "<= 2",
                        ratio <= 2,
                    )
    check(
        f"soak: RSS growth over {soak.served} requests (line through the second half)",
        slope.growth_percent,
        "<= 2 %",
        slope.growth_percent <= 2,
    )
    return checks


# -- the report ---------------------------------------------------------------------------------------


def writeup_table(points: dict[str, list[Point]], starts: list[ColdStart], engine: str) -> list[str]:
    """The write-up's before/after table: unbatched vs batched at the highest client count."""
    top = max(p.concurrency for p in points[engine] if p.label == OFF)
    before, after = _at(points[engine], OFF, top), _at(points[engine], ON, top)
    cold = {s.warmup: s for s in starts if s.label == engine}
    rows = [
        f"| {engine}, {top} clients | batching off | batching on | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| requests/s | {before.rps:.3g} | {after.rps:.3g} | {after.rps / before.rps:.2f}x |",
        f"| audio seconds/s | {before.audio_per_second:.3g} | {after.audio_per_second:.3g} | "
        f"{after.audio_per_second / before.audio_per_second:.2f}x |",
        f"| p50 latency | {before.pct(0.5):.3g} s | {after.pct(0.5):.3g} s | {after.pct(0.5) / before.pct(0.5):.2f}x |",
        f"| p99 latency | {before.pct(0.99):.3g} s | {after.pct(0.99):.3g} s | "
        f"{after.pct(0.99) / before.pct(0.99):.2f}x |",
        f"| server RSS peak | {before.rss_peak_mb:.0f} MB | {after.rss_peak_mb:.0f} MB | "
        f"{after.rss_peak_mb / before.rss_peak_mb:.2f}x |",
        f"| cold start → first audio | warmup off: {cold[False].first_audio_s:.1f} s | "
        f"warmup on: {cold[True].first_audio_s:.1f} s | |",
    ]
    return rows


def _fmt(v: float) -> str:
    return "–" if isinstance(v, float) and math.isnan(v) else f"{v:.3g}"


def report(data: dict, pngs: dict[str, Path]) -> str:
    points, starts, soak, slope, bursts = data["_objects"]
    early = rss_slope(soak, EARLY_FROM)
    plan = data["plan"]
    alone = data["engine_alone"]
    lines = [
        "# kubetts benchmark suite" + (" (quick smoke: figures not meaningful)" if plan["quick"] else ""),
        "",
        *environment.header_lines(),
        f"- ChatTTS: {data['checkpoint']} checkpoint (tests/chattts_checkpoint.py), every request exactly "
        f"{plan['chattts_tokens']} audio tokens (TTS_MIN_NEW_TOKENS = TTS_MAX_NEW_TOKENS), torch threads = CPUs",
        "- load generator on the same machine as the server; corpus: short Chinese sentences (~12 characters), "
        "and a mixed zh/en/code-switched set, fixed seed",
        "- **CPU numbers**: ChatTTS on a GPU batches far better; compare ratios, not absolute times",
        "",
        "## Before / after (the write-up's table)",
        "",
    ]
    for engine in ("chattts", "espeak"):
        lines += writeup_table(points, starts, engine) + [""]
    lines += [
        "## Expectations",
        "",
        "| expectation | measured | bound | held |",
        "| --- | ---: | --- | --- |",
    ]
    for c in data["expectations"]:
        lines.append(
            f"| {c['what']} | {_fmt(c['value'])} | {c['bound']} | {'yes' if c['held'] else '**no**'} |"
        )
    lines += ["", "## 1. Batching on vs off, every load point", ""]
    for engine in ("chattts", "espeak"):
        lines += [f"### {engine}", "", table(points[engine]), ""]
    lines += [
        "Closed loop: N clients, each sending when answered. Open loop: constant arrival rate, latency from the "
        "intended send time. TTFB: first body byte (a whole-file answer sends its body at once; a streamed one "
        "as audio is made). Mean batch: from the service's `tts_batch_size` histogram.",
        "",
        "## 2. The engine alone (in-process, no HTTP)",
        "",
        "| engine | tokens per item | batch size | items | items/s | audio s/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in alone.values():
        tokens = result["max_new_tokens"] if result["engine"] == "chattts" else "–"
        for r in result["results"]:
            lines.append(
                f"| {result['engine']} | {tokens} | {r['batch_size']} | {r['items']} | "
                f"{r['items_per_second']:.3g} | {r['audio_per_second']:.3g} |"
            )
    lines += [
        "",
        "### The server vs the engine alone, measured next to each other",
        "",
        "Each round: the engine alone synthesizes in calls of 8, then right after it the server (batching on) "
        "answers a closed loop; both processes stay loaded, the one not measured idles.",
        "",
        "| engine | round | engine alone items/s | server clients | server req/s | mean batch | server % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for engine, pair in data["server_vs_engine"].items():
        for i, r in enumerate(pair["rounds"], 1):
            lines.append(
                f"| {engine} | {i} | {r['engine_items_per_second']:.3g} | {pair['clients']} | "
                f"{r['server_requests_per_second']:.3g} | {r['server_mean_batch']:.2f} | "
                f"{r['share_percent']:.0f} |"
            )
        lines.append(f"| {engine} | **median** | | | | | **{pair['median_share_percent']:.0f}** |")
    lines += [
        "",
        "## 3. Cold start",
        "",
        "| engine | warmup | process start → /readyz 200 | → first synthesis answered | first request itself |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for s in starts:
        lines.append(
            f"| {s.label} | {'on' if s.warmup else 'off'} | {s.ready_s:.2f} s | {s.first_audio_s:.2f} s "
            f"| {s.first_request_s:.2f} s |"
        )
    lines += [
        "",
        "## 4. Soak",
        "",
        f"{soak.served} of {soak.sent} requests served ({soak.errors} errors) at {soak.rate:.3g}/s open loop "
        f"(60 % of espeak's best), mixed corpus, {soak.seconds:.0f} s; p50 {soak.pct(0.5) * 1000:.0f} ms, "
        f"p99 {soak.pct(0.99) * 1000:.0f} ms. Server RSS: first sample {slope.first_mb:.1f} MB, "
        f"{early.start_mb:.1f} → {early.end_mb:.1f} MB fitted from {EARLY_FROM:.0%} of the run "
        f"({early.growth_percent:+.2f} %: the allocator still filling up to its high-water mark), "
        f"{slope.start_mb:.1f} → {slope.end_mb:.1f} MB fitted through the second half "
        f"(**{slope.growth_percent:+.2f} %**), peak {slope.peak_mb:.1f} MB, {slope.samples} samples.",
        "",
        "## 5. Overload (espeak, default settings)",
        "",
        f"Sustainable rate (closed loop, 32 clients): {data['overload']['sustainable_rps']:.1f} requests/s.",
        "",
        *overload.burst_rows(bursts, plan["burst_seconds"]),
        "",
        overload.LEGEND,
        "",
        "## Plots",
        "",
    ]
    for title, png in pngs.items():
        lines.append(f"![{title}]({png.name})")
    return "\n".join(lines) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="the smoke variant (< 2 min, figures meaningless)"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--chattts-tokens", type=int, default=64, help="audio tokens per ChatTTS request")
    parser.add_argument(
        "--cache",
        type=Path,
        default=ROOT / ".cache" / "bench",
        help="where the random-weights checkpoint is built (once)",
    )
    args = parser.parse_args()
    plan = Plan.smoke() if args.quick else Plan.full(args.chattts_tokens)
    with tempfile.TemporaryDirectory() as scratch:
        data = await run(plan, Path(scratch) if args.quick else args.cache)
    stem = f"{environment.now():%Y-%m-%d}-{environment.machine_slug()}" + ("-quick" if args.quick else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    points, _, soak, slope, _ = data["_objects"]
    pngs = {
        "latency vs throughput": plots.latency_vs_throughput(points, args.out_dir / f"{stem}-latency.png"),
        "batch sizes": plots.batch_sizes(points, args.out_dir / f"{stem}-batches.png"),
        "RSS over the soak": plots.rss_over_time(soak, slope, STEADY_FROM, args.out_dir / f"{stem}-rss.png"),
    }
    out = args.out_dir / f"{stem}.md"
    out.write_text(report(data, pngs))
    del data["_objects"]
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
