"""Continuous batching against request-level batching, one-at-a-time and Ray Serve, in ONE run.

    .venv/bin/python bench/continuous.py [--quick] [--out-dir bench/results]

Every server runs the ChatTTS engine on the random-weights checkpoint (tests/chattts_checkpoint.py,
the tiny geometry unless ``--full-size``) on 127.0.0.1, started and stopped here, one after the
other.  The corpus is mixed in length: Chinese texts of 5-60 characters (fixed seed), and every
request runs to its own token budget (``TTS_MIN_NEW_TOKENS`` above every budget: random weights
would otherwise stop at random), so the rows of a batch really differ in length.

Servers: ``continuous`` (TTS_SCHEDULER=continuous, 8 rows), ``request`` (request-level batches of 8,
the default adaptive wait: up to 80 ms, only while requests overlap), ``one-at-a-time`` (batch
size 1: one engine call per request) and, when
Ray Serve is installed (``--ray-lib``: a ``pip install --target`` directory), ``ray serve.batch`` (bench/ray_serve_peer.py: the same engine behind Ray Serve's
``@serve.batch``, 8 / 80 ms: a fixed wait).

For each: one client (closed loop), 32 clients (closed loop), and open-loop points of 40 s at
fractions of the request-level server's 32-client throughput (latency from the intended send
time), refined by bisection around the highest sustained rate for the two schedulers compared.  First, espeak (the default engine) with one client, default batching vs batch size 1.
Writes ``<out-dir>/<date>-<machine>-continuous.{md,json,png}``.  Nothing is asserted here; the
report compares the ratios with the targets of issue #18 and says which held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import checkpoints  # noqa: E402
import environment  # noqa: E402
from http_load import Server, free_port, percentile  # noqa: E402

SOURCE = (
    "今天天气很好我们一起去公园散步吧春天来了花园里的花都开了红的黄的白的非常好看小明每天早上七点起床"
    "先跑步再吃早饭然后去学校上课这家餐厅的菜很好吃价格也不贵所以每到周末都有很多人你知道最近的火车站"
    "在哪里吗明天的会议改到下午三点请大家准时参加"
)
SHORTEST, LONGEST = 5, 60
BATCH = 8
# Open-loop rates as fractions of the request-level server's 32-client throughput; a sweep stops
# after two rates in a row that the server could not sustain.
OPEN_FRACTIONS = (0.5, 0.7, 1.0, 1.2, 1.4, 1.6, 1.8, 2.1, 2.4)
PEER_FRACTIONS = (0.5, 0.7, 1.0)
# Sustained: the last third of the requests (in send order) waits at most this many times
# the first third's median (a server that cannot keep up queues without bound).
GROWTH_LIMIT = 2.0


def texts(count: int, seed: int) -> list[str]:
    """``count`` texts of SHORTEST..LONGEST characters cut from SOURCE, ending in '。'."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(SHORTEST, LONGEST) - 1
        start = rng.randrange(0, len(SOURCE) - n)
        out.append(SOURCE[start : start + n] + "。")
    return out


@dataclass
class Run:
    """One load point on one server: every request's length, latency and outcome."""

    server: str
    load: str  # "1 client", "32 clients", "2.1/s open"
    offered: float = 0.0  # open loop: requests per second
    seconds: float = 0.0
    # (send order, characters, latency s, HTTP status or 0 for no answer)
    results: list[tuple[int, int, float, int]] = field(default_factory=list)

    @property
    def served(self) -> int:
        return sum(1 for *_, status in self.results if status == 200)

    @property
    def rps(self) -> float:
        return self.served / self.seconds if self.seconds else float("nan")

    def latencies(self, short: bool | None = None) -> list[float]:
        median = (SHORTEST + LONGEST) // 2
        return [
            latency
            for _, chars, latency, status in self.results
            if status == 200 and (short is None or (chars <= median) == short)
        ]

    def pct(self, q: float, short: bool | None = None) -> float:
        return percentile(self.latencies(short), q)

    @property
    def growth(self) -> float:
        """Median latency of the last third of the requests (in send order) over the first's."""
        ordered = [latency for _, _, latency, _ in sorted(self.results)]
        third = max(1, len(ordered) // 3)
        return percentile(ordered[-third:], 0.5) / percentile(ordered[:third], 0.5)

    @property
    def sustained(self) -> bool:
        """Every request answered, and latency did not grow through the run (no backlog)."""
        return self.served == len(self.results) and self.growth <= GROWTH_LIMIT

    def summary(self) -> dict:
        data = asdict(self)
        del data["results"]
        return {
            **data,
            "sent": len(self.results),
            "served": self.served,
            "rps": self.rps,
            "p50": self.pct(0.5),
            "p99": self.pct(0.99),
            "short_p99": self.pct(0.99, short=True),
            "long_p99": self.pct(0.99, short=False),
            "growth": self.growth,
            "sustained": self.sustained,
        }


async def post(session: aiohttp.ClientSession, url: str, text: str, t0: float, run: Run, order: int) -> None:
    body = {"input": text, "response_format": "pcm"}
    try:
        async with session.post(url + "/v1/audio/speech", json=body) as response:
            data = await response.read()
            status = response.status if data or response.status != 200 else 0
    except (TimeoutError, aiohttp.ClientError):
        status = 0
    run.results.append((order, len(text), time.perf_counter() - t0, status))


async def closed(url: str, server: str, clients: int, total: int, seed: int) -> Run:
    run = Run(server, f"{clients} client{'s' if clients > 1 else ''}")
    pending = iter(enumerate(texts(total, seed)))
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            for order, text in pending:  # one shared iterator: each text is taken once
                await post(session, url, text, time.perf_counter(), run, order)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        run.seconds = time.perf_counter() - started
    return run


async def open_loop(url: str, server: str, rate: float, seconds: float, seed: int) -> Run:
    count = max(4, int(rate * seconds))
    run = Run(server, f"{rate:.3g}/s open", offered=rate)
    corpus = texts(count, seed)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()

        async def one(i: int) -> None:
            intended = start + i / rate
            await asyncio.sleep(max(0.0, intended - time.perf_counter()))  # the schedule, not sync
            await post(session, url, corpus[i], intended, run, i)

        await asyncio.gather(*(one(i) for i in range(count)))
        # The rate it kept up with: requests over the schedule's length plus the last one's drain.
        run.seconds = max(count / rate, time.perf_counter() - start)
    return run


class RayServer:
    """bench/ray_serve_peer.py as a subprocess (same interface as http_load.Server)."""

    def __init__(self, env: dict[str, str], ray_lib: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        pythonpath = os.pathsep.join([str(ray_lib), str(ROOT / "service"), os.environ.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "ray_serve_peer.py"), "--port", str(self.port)],
            env={**os.environ, **env, "PYTHONPATH": pythonpath, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        self.started = time.perf_counter()

    wait_ready = Server.wait_ready

    def stop(self) -> None:
        Server.stop(self)  # type: ignore[arg-type]


async def measure(
    name: str,
    server,
    quick: bool,
    request_capacity: float | None,
    fractions: tuple[float, ...],
    refine: int = 0,
) -> list[Run]:
    """One client, 32 clients, then an open-loop sweep at ``fractions`` of the request-level
    capacity that stops after two rates in a row the server could not sustain, then ``refine``
    bisections between the highest rate it sustained and the lowest above it that it did not."""
    await server.wait_ready()
    runs: list[Run] = []
    seconds = 8 if quick else 40
    try:
        runs.append(await closed(server.url, name, 1, 6 if quick else 24, seed=1))
        runs.append(await closed(server.url, name, 32, 32 if quick else 64, seed=2))
        capacity = request_capacity or runs[-1].rps
        failed = 0
        for fraction in (0.7,) if quick else fractions:
            run = await open_loop(server.url, name, fraction * capacity, seconds, seed=3)
            runs.append(run)
            failed = 0 if run.sustained else failed + 1
            if failed == 2:
                break
        for _ in range(0 if quick else refine):
            good = max((r.offered for r in runs if r.offered and r.sustained), default=None)
            bad = min(
                (r.offered for r in runs if r.offered and not r.sustained and r.offered > (good or 0)),
                default=None,
            )
            if good is None or bad is None:
                break
            runs.append(await open_loop(server.url, name, (good + bad) / 2, seconds, seed=3))
    finally:
        server.stop()
    return runs


def report(runs: list[Run], meta: dict, out: Path) -> str:
    by = {(r.server, r.load): r for r in runs}
    servers = list(dict.fromkeys(r.server for r in runs))
    sustainable = {
        s: max((r.offered for r in runs if r.server == s and r.offered and r.sustained), default=0.0)
        for s in servers
        if any(r.server == s and r.offered for r in runs)
    }
    lines = [
        "# Continuous batching vs request-level batching (issue #18)",
        "",
        *environment.header_lines(),
        f"- checkpoint: random weights, {meta['geometry']} geometry; texts of {SHORTEST}-{LONGEST} "
        "characters; every request runs to its own token budget (TTS_MIN_NEW_TOKENS above all budgets)",
        "",
        "| server | load | sent | served | req/s | p50 ms | p99 ms | short-half p99 ms | long-half p99 ms "
        "| growth |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        growth = f"{r.growth:.2f}{'' if r.sustained else ' (backlog)'}" if r.offered else ""
        lines.append(
            f"| {r.server} | {r.load} | {len(r.results)} | {r.served} | {r.rps:.2f} | {1000 * r.pct(0.5):.0f} "
            f"| {1000 * r.pct(0.99):.0f} | {1000 * r.pct(0.99, True):.0f} | {1000 * r.pct(0.99, False):.0f} "
            f"| {growth} |"
        )
    lines += [
        "",
        "Sustainable open-loop rate: the highest offered rate at which every request was answered and",
        f"latency did not grow through the run (last third's median <= {GROWTH_LIMIT:g}x the first's):",
        "",
    ]
    for s, rate in sustainable.items():
        lines.append(f"- {s}: {rate:.2f} req/s")
    checks = expectations(by, sustainable)
    lines += ["", "## Targets of #18", ""]
    for text, value, held in checks:
        lines.append(f"- {'held' if held else 'NOT held'}: {text} ({value})")
    lines += ["", f"![latency against offered load]({out.name}.png)", ""]
    return "\n".join(lines)


def expectations(by: dict, sustainable: dict) -> list[tuple[str, str, bool]]:
    checks = []
    cont, req, one = "continuous", "request", "one-at-a-time"
    if sustainable.get(req):
        ratio = sustainable[cont] / sustainable[req]
        checks.append(
            ("sustainable throughput continuous >= 1.4x request-level", f"{ratio:.2f}x", ratio >= 1.4)
        )
    saturated = {
        s: max((r.rps for k, r in by.items() if k[0] == s and r.offered and not r.sustained), default=0.0)
        for s in (cont, req)
    }
    if saturated[req] and saturated[cont]:
        ratio = saturated[cont] / saturated[req]
        checks.append(
            (
                "(also) throughput when overloaded, open loop: continuous >= 1.4x request-level",
                f"{ratio:.2f}x",
                ratio >= 1.4,
            )
        )
    at70 = [
        k for k in by if k[0] == req and by[k].offered and abs(by[k].offered / _capacity(by) - 0.7) < 1e-6
    ]
    if at70:
        load = at70[0][1]
        c, r = by.get((cont, load)), by[(req, load)]
        if c is not None:
            ratio = c.pct(0.99, True) / r.pct(0.99, True)
            checks.append(
                ("short-half p99 at 70 % of request-level capacity <= 0.5x", f"{ratio:.2f}x", ratio <= 0.5)
            )
    if (one, "1 client") in by and (cont, "1 client") in by:
        ratio = by[(cont, "1 client")].pct(0.5) / by[(one, "1 client")].pct(0.5)
        checks.append(("one client: p50 within 1.1x of one-at-a-time", f"{ratio:.2f}x", ratio <= 1.1))
    if ("espeak default", "1 client") in by and ("espeak batch 1", "1 client") in by:
        ratio = by[("espeak default", "1 client")].pct(0.5) / by[("espeak batch 1", "1 client")].pct(0.5)
        checks.append(
            ("espeak, one client: default p50 within 1.1x of batch size 1", f"{ratio:.2f}x", ratio <= 1.1)
        )
    if (req, "32 clients") in by and (cont, "32 clients") in by:
        ratio = by[(cont, "32 clients")].rps / by[(req, "32 clients")].rps
        checks.append(
            ("32 clients: throughput >= 95 % of request-level", f"{100 * ratio:.0f} %", ratio >= 0.95)
        )
    return checks


def _capacity(by: dict) -> float:
    return by[("request", "32 clients")].rps


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax50, ax99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in dict.fromkeys(r.server for r in runs):
        points = sorted((r for r in runs if r.server == server and r.offered), key=lambda r: r.offered)
        if not points:
            continue
        x = [r.offered for r in points]
        ax50.plot(x, [r.pct(0.5) for r in points], marker="o", label=server)
        ax99.plot(x, [r.pct(0.99, True) for r in points], marker="o", label=server)
    for ax, title in ((ax50, "p50 latency (all)"), (ax99, "p99 latency (short half)")):
        ax.set_xlabel("offered load (req/s, open loop)")
        ax.set_ylabel("seconds")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax50.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests, one open point")
    parser.add_argument("--full-size", action="store_true", help="the official geometry (slow on a CPU)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--ray-lib", type=Path, default=ROOT / ".cache" / "bench" / "ray-lib")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench")
    args = parser.parse_args()
    checkpoint = checkpoints.ensure_checkpoint(args.full_size, args.cache)
    env = {
        **checkpoints.chattts_env(checkpoint),
        "TTS_MAX_NEW_TOKENS": "2048",
        "TTS_MIN_NEW_TOKENS": "2048",  # every row to its own budget (48 + 12 per character)
        "TTS_TORCH_THREADS": "1",
        "TTS_REQUEST_TIMEOUT_S": "300",
        "TTS_MAX_QUEUE_SIZE": "4096",
    }
    request = {"TTS_SCHEDULER": "request", "TTS_MAX_BATCH_SIZE": str(BATCH)}
    setups = [
        ("request", request),
        ("continuous", {"TTS_SCHEDULER": "continuous", "TTS_MAX_BATCH_SIZE": str(BATCH)}),
        ("one-at-a-time", {**request, "TTS_MAX_BATCH_SIZE": "1"}),
    ]
    runs: list[Run] = []
    # Adaptive admission on the default engine: one client against espeak with the default
    # batching (8, up to 80 ms, waited only while requests overlap) and with batching off.
    espeak = {"TTS_ENGINE": "espeak", "TTS_MAX_QUEUE_SIZE": "4096"}
    for name, extra in [("espeak default", {}), ("espeak batch 1", {"TTS_MAX_BATCH_SIZE": "1"})]:
        server = Server({**espeak, **extra})
        await server.wait_ready()
        try:
            runs.append(await closed(server.url, name, 1, 40 if args.quick else 300, seed=4))
        finally:
            server.stop()
    capacity = None
    for name, extra in setups:
        main = name in ("request", "continuous")
        fractions = OPEN_FRACTIONS if main else PEER_FRACTIONS
        runs += await measure(
            name, Server({**env, **extra}), args.quick, capacity, fractions, 2 if main else 0
        )
        if name == "request":
            capacity = next(r.rps for r in runs if r.server == "request" and r.load == "32 clients")
    ray_note = ""
    if (args.ray_lib / "ray").is_dir():
        try:
            ray = RayServer(env, args.ray_lib)
            runs += await measure("ray serve.batch", ray, args.quick, capacity, PEER_FRACTIONS)
        except Exception as exc:  # a peer that does not start is reported, not fatal
            ray_note = f"Ray Serve peer failed: {type(exc).__name__}: {exc}"
    else:
        ray_note = f"Ray Serve not installed under {args.ray_lib}: peer not measured"
    meta = {"geometry": "official" if args.full_size else "tiny", "commit": environment.commit()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    date = f"{environment.now():%Y-%m-%d}"
    stem = args.out_dir / f"{date}-{environment.machine_slug()}-continuous{'-quick' if args.quick else ''}"
    text = report(runs, meta, stem)
    if ray_note:
        text += f"\n{ray_note}\n"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "runs": [r.summary() for r in runs]}, indent=1)
    )
    plot(runs, stem.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    asyncio.run(main())
