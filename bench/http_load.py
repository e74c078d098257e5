"""The load generator: closed-loop and open-loop HTTP load against kubetts, one point at a time.

Used by the benchmark suite (``bench/suite.py``) and ``bench/overload.py``; on its own it
measures a service you started yourself:

    .venv/bin/python bench/http_load.py --url http://127.0.0.1:8080 --concurrency 1,4,16
    .venv/bin/python bench/http_load.py --url http://127.0.0.1:8080 --rate 50 --seconds 10

*Closed loop*: N clients, each sends its next request when the previous one answered.
*Open loop*: requests start at a constant rate whatever the answers do, and each latency is
measured from the request's **intended** send time, so a stalled server cannot hide its
stall by slowing the load down (no coordinated omission -- what wrk2 does).

Every answer is classified -- 200 with audio whose length matches ``X-TTS-Audio-Seconds``,
503 (rejected, must carry Retry-After), 504 (deadline), anything else -- and a request with
no HTTP answer counts as lost.  The batch sizes come from the service's own
``tts_batch_size`` histogram, the server's RSS from ``/proc`` when its pid is known.
Texts come from a fixed-seed corpus: short Chinese sentences of ~12 characters (the
write-up's test) or a mixed zh/en/code-switched set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

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
    "您的快递已经放在门口了",
    "本次列车即将到达终点站",
    "请把文件发到我的邮箱里",
    "晚饭我们吃面条好不好呀",
    "温度是25度湿度百分之六十",
    "航班延误了大约两个小时",
    "这本书我已经看了三遍了",
    "明天早上七点叫我起床吧",
]
EN = [
    "The weather is nice today.",
    "Please call me back tomorrow.",
    "Turn left at the next corner.",
    "The meeting starts at ten.",
    "Your order has been shipped.",
    "It costs 42 dollars in total.",
]
CODE_SWITCHED = [
    "明天的meeting改到下午三点",
    "请帮我订一张去Paris的机票",
    "这个API的延迟是80毫秒",
    "我用iPhone拍了这张照片",
]
CORPORA = {"zh": ZH, "mixed": ZH + EN + CODE_SWITCHED}
SAMPLE_BYTES = 2  # pcm: 16-bit mono
RSS_INTERVAL_S = 0.1


def corpus(name: str, count: int, seed: int) -> list[str]:
    """``count`` texts drawn from corpus ``name`` with a fixed seed (same texts for every setup)."""
    rng = random.Random(seed)
    return [rng.choice(CORPORA[name]) for _ in range(count)]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank); NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Point:
    """One measured load point: what was sent, how each answer went, what the server did."""

    label: str
    mode: str  # "closed" or "open"
    corpus: str
    concurrency: int = 0  # closed loop
    rate: float = 0.0  # open loop: intended requests per second
    stream: bool = False
    sent: int = 0
    served: int = 0
    rejected: int = 0
    timed_out: int = 0
    other: int = 0
    lost: int = 0
    bad_audio: int = 0
    retry_after_missing: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    batch_sizes: dict[str, float] = field(default_factory=dict)  # histogram bucket "le" -> batches
    batched_items: float = 0.0
    batches: float = 0.0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)

    @property
    def rps(self) -> float:
        return self.served / self.seconds if self.seconds else float("nan")

    @property
    def audio_per_second(self) -> float:
        return self.audio_seconds / self.seconds if self.seconds else float("nan")

    @property
    def errors(self) -> int:
        return self.rejected + self.timed_out + self.other + self.lost + self.bad_audio

    @property
    def mean_batch(self) -> float:
        return self.batched_items / self.batches if self.batches else float("nan")

    @property
    def rss_peak_mb(self) -> float:
        return max((mb for _, mb in self.rss_mb), default=float("nan"))

    @property
    def load(self) -> str:
        """What loaded the server: "32 clients", "8 clients, streamed", "83/s open"."""
        load = f"{self.concurrency} clients" if self.mode == "closed" else f"{self.rate:.3g}/s open"
        return load + (", streamed" if self.stream else "")

    def pct(self, q: float) -> float:
        return percentile(self.latencies, q)

    def summary(self) -> dict:
        """JSON-friendly figures (raw latencies left out; the RSS series kept)."""
        data = asdict(self)
        del data["latencies"], data["ttfbs"]
        return {
            **data,
            "rps": self.rps,
            "audio_per_second": self.audio_per_second,
            "errors": self.errors,
            "mean_batch": self.mean_batch,
            "rss_peak_mb": self.rss_peak_mb,
            **{f"p{int(q * 100)}": self.pct(q) for q in (0.5, 0.9, 0.99)},
            "max": max(self.latencies, default=float("nan")),
            "ttfb_p50": percentile(self.ttfbs, 0.5),
            "ttfb_p99": percentile(self.ttfbs, 0.99),
        }


# -- the server's side: metrics and memory ---------------------------------------------------


async def scrape_metrics(session: aiohttp.ClientSession, url: str, *names: str) -> list[float]:
    """The values of series ``names`` (exact, labels included) on /metrics; 0 when absent."""
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    return [_series(text, name) for name in names]


def _series(text: str, name: str) -> float:
    """One series' value in a /metrics text; 0 when absent."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def batch_histogram(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """``tts_batch_size``: cumulative bucket counts by ``le``, plus ``sum`` and ``count``."""
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    hist = {
        le: float(v) for le, v in re.findall(r'^tts_batch_size_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)
    }
    for part in ("sum", "count"):
        hist[part] = _series(text, f"tts_batch_size_{part}")
    return hist


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def sample_rss(pid: int, point: Point, started: float, stop: asyncio.Event) -> None:
    """Append (seconds, MB) to ``point.rss_mb`` every :data:`RSS_INTERVAL_S` until ``stop``."""
    while True:
        point.rss_mb.append((time.perf_counter() - started, rss_mb(pid)))
        try:
            await asyncio.wait_for(stop.wait(), RSS_INTERVAL_S)
            return
        except TimeoutError:
            pass


# -- one request -------------------------------------------------------------------------------


async def send(session: aiohttp.ClientSession, url: str, text: str, point: Point, t0: float) -> None:
    """POST one synthesis, classify the answer into ``point``; latency counts from ``t0``."""
    body = {"input": text, "response_format": "pcm"}
    if point.stream:
        body["stream"] = True
    point.sent += 1
    try:
        async with session.post(url + "/v1/audio/speech", json=body) as response:
            first = await response.content.readany()
            ttfb = time.perf_counter() - t0
            data = first + await response.read()
            done = time.perf_counter() - t0
            if response.status == 200:
                rate = int(response.headers["X-TTS-Sample-Rate"])
                seconds = len(data) / SAMPLE_BYTES / rate
                claimed = response.headers.get("X-TTS-Audio-Seconds")  # absent on a stream
                if not data or (claimed is not None and abs(seconds - float(claimed)) > 0.01):
                    point.bad_audio += 1
                    return
                point.served += 1
                point.latencies.append(done)
                point.ttfbs.append(ttfb)
                point.audio_seconds += seconds
            elif response.status == 503:
                point.rejected += 1
                if "Retry-After" not in response.headers:
                    point.retry_after_missing += 1
            elif response.status == 504:
                point.timed_out += 1
            else:
                point.other += 1
    except (TimeoutError, aiohttp.ClientError):
        point.lost += 1


class _Measured:
    """Wraps one point's run: batch histogram before/after, RSS sampling, wall time."""

    def __init__(self, session: aiohttp.ClientSession, url: str, point: Point, pid: int | None) -> None:
        self.session, self.url, self.point, self.pid = session, url, point, pid
        self.stop = asyncio.Event()

    async def __aenter__(self) -> float:
        self.before = await batch_histogram(self.session, self.url)
        self.started = time.perf_counter()
        self.sampler = (
            asyncio.create_task(sample_rss(self.pid, self.point, self.started, self.stop))
            if self.pid
            else None
        )
        return self.started

    async def __aexit__(self, *exc) -> None:
        self.point.seconds = time.perf_counter() - self.started
        self.stop.set()
        if self.sampler:
            await self.sampler
        after = await batch_histogram(self.session, self.url)
        self.point.batched_items = after["sum"] - self.before["sum"]
        self.point.batches = after["count"] - self.before["count"]
        previous = 0.0
        for le in (k for k in after if k not in ("sum", "count")):
            cumulative = after[le] - self.before.get(le, 0.0)
            if cumulative - previous:
                self.point.batch_sizes[le] = cumulative - previous
            previous = cumulative


def client_session(connections: int, timeout_s: float) -> aiohttp.ClientSession:
    """A client session with ``connections`` connections at most (0: no limit)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s), connector=aiohttp.TCPConnector(limit=connections)
    )


async def closed_loop(
    url: str,
    label: str,
    concurrency: int,
    total: int,
    *,
    corpus_name: str = "zh",
    seed: int = 7,
    pid: int | None = None,
    stream: bool = False,
    timeout_s: float = 900,
) -> Point:
    """``concurrency`` clients share ``total`` requests, each sending when its last one answered."""
    texts = corpus(corpus_name, total, seed)
    point = Point(label, "closed", corpus_name, concurrency=concurrency, stream=stream)
    pending = iter(texts)
    async with client_session(concurrency + 4, timeout_s) as session:

        async def client() -> None:
            for text in pending:  # one shared iterator: each text is taken once
                await send(session, url, text, point, time.perf_counter())

        async with _Measured(session, url, point, pid):
            await asyncio.gather(*(client() for _ in range(concurrency)))
    return point


async def open_loop(
    url: str,
    label: str,
    rate: float,
    seconds: float,
    *,
    corpus_name: str = "zh",
    seed: int = 7,
    pid: int | None = None,
    timeout_s: float = 300,
) -> Point:
    """Requests start every ``1/rate`` s for ``seconds``; latency counts from the intended start."""
    count = max(1, int(rate * seconds))
    texts = corpus(corpus_name, count, seed)
    point = Point(label, "open", corpus_name, rate=rate)
    async with client_session(4000, timeout_s) as session:
        async with _Measured(session, url, point, pid) as start:

            async def one(i: int) -> None:
                intended = start + i / rate
                await asyncio.sleep(max(0.0, intended - time.perf_counter()))
                await send(session, url, texts[i], point, intended)

            await asyncio.gather(*(one(i) for i in range(count)))
    return point


# -- a server to measure -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The service as a subprocess on 127.0.0.1 with ``env`` on top of ours; SIGTERM stops it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tts_service"],
            env={
                **os.environ,
                "TTS_LOG_LEVEL": "ERROR",  # no line per rejected request during a burst
                **env,
                "TTS_HOST": "127.0.0.1",
                "TTS_PORT": str(self.port),
            },
        )

    async def wait_ready(self, timeout: float = 600, poll_s: float = 0.02) -> float:
        """Seconds from process start until /readyz answered 200."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited with {self.proc.returncode}")
                try:
                    async with session.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return time.perf_counter() - self.started
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(poll_s)  # polling a condition, bounded by the deadline
        raise TimeoutError("service did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def table(points: list[Point]) -> str:
    """Markdown rows, one per point."""
    rows = [
        "| setup | load | corpus | served | errors | req/s | audio s/s | p50 ms | p90 ms | p99 ms | max ms "
        "| TTFB p50 ms | mean batch | RSS peak MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        rows.append(
            f"| {p.label} | {p.load} | {p.corpus} | {p.served} | {p.errors} | {p.rps:.3g} | "
            f"{p.audio_per_second:.3g} | {_ms(p.pct(0.5))} | {_ms(p.pct(0.9))} | {_ms(p.pct(0.99))} | "
            f"{_ms(max(p.latencies, default=float('nan')))} | {_ms(percentile(p.ttfbs, 0.5))} | "
            f"{p.mean_batch:.2f} | {p.rss_peak_mb:.0f} |"
        )
    return "\n".join(rows)


def _ms(seconds: float) -> str:
    return "–" if seconds != seconds else f"{seconds * 1000:.0f}"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="a running service, e.g. http://127.0.0.1:8080")
    parser.add_argument("--concurrency", default="1,4,16,32", help="closed loop: client counts")
    parser.add_argument("--requests", type=int, default=200, help="closed loop: requests per point")
    parser.add_argument("--rate", type=float, help="open loop at this many requests/s instead")
    parser.add_argument("--seconds", type=float, default=10.0, help="open loop: how long")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="zh")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.rate:
        points = [await open_loop(args.url, "given", args.rate, args.seconds, corpus_name=args.corpus)]
    else:
        points = [
            await closed_loop(args.url, "given", int(c), max(args.requests, int(c)), corpus_name=args.corpus)
            for c in args.concurrency.split(",")
        ]
    print(table(points))


if __name__ == "__main__":
    asyncio.run(main())
