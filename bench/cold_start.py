"""Cold start, phase by phase (issue #19): how long until the service is ready, and what the
first request costs next to the steady state.

    python bench/cold_start.py                  # CPU: ChatTTS (official geometry) and espeak, ~15 min
    python bench/cold_start.py --quick          # smoke: the tiny checkpoint, one round
    python bench/cold_start.py --gpu            # the same on CUDA (compile, CUDA_MODULE_LOADING); says
                                                # so and exits 0 where there is no GPU
    python bench/cold_start.py --baseline DIR   # also start the service of another checkout (DIR holds
                                                # its service/), e.g. the commit before this work

Every start is a fresh service process on 127.0.0.1 (``python -m tts_service``).  For each one
the bench records: process start -> ``/healthz`` answers (the service's own imports), -> ``/readyz``
200, the engine's phases from ``tts_startup_phase_seconds`` (imports of torch/transformers/ChatTTS,
weight verification, module construction, weight loading, the warmup's pieces), the first
request's latency, and the steady state: the median of the next requests in the same process.
Every request is exactly the same number of audio tokens (TTS_MIN_NEW_TOKENS = TTS_MAX_NEW_TOKENS).

The matrix, per engine: warmup off/on x weight verification off/on x first/second start, where
the first start has an empty ``TTS_CACHE_DIR`` and the second reuses the one the first filled
(the verified weight hashes).  The OS page cache is warm for both (the weights were read before;
dropping it needs root): the second start's gain is the service's own caches only.  Configurations
are interleaved in rounds, so the machine's drift hits them alike; the figures are medians over
rounds.  Verification on random weights checks them against the checkpoint's own sha256 map
(``TTS_MODEL_SHA256_FILE``), which costs the same as checking the official weights.

Writes ``<out-dir>/<date>-<machine>-cold-start[-quick|-gpu].{md,json}``.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))  # metric_samples: the /metrics parser the tests use

import checkpoints  # noqa: E402
import environment  # noqa: E402
from http_load import Server  # noqa: E402
from metric_samples import samples_of  # noqa: E402

TEXT = "你好，欢迎使用。"
TOKENS = 48  # every ChatTTS request: the smallest budget a row gets (MIN_TOKEN_BUDGET)
HEADER_KEYS = ("- date:", "- machine:", "- versions:", "- commit:", "- command:")
GOAL_READY = 1.3  # ready with warmup <= 1.3x loaded without (same verification, same caches)
GOAL_FIRST = 1.2  # first request after ready (warmup on) <= 1.2x the steady state


@dataclass(frozen=True)
class Config:
    engine: str
    warmup: bool
    verify: bool = False
    second: bool = False  # a second start: the cache directory the first start of its pair filled
    service: str = "this"  # "this" checkout, or "baseline"
    gpu: dict[str, str] = field(default_factory=dict)  # GPU mode: TTS_COMPILE, CUDA_MODULE_LOADING

    @property
    def label(self) -> str:
        parts = [self.engine if self.service == "this" else f"{self.engine} (baseline)"]
        parts += [f"{k}={v}" for k, v in sorted(self.gpu.items())]
        parts.append("warmup on" if self.warmup else "warmup off")
        if self.engine == "chattts" and self.service == "this":
            parts.append("verify on" if self.verify else "verify off")
            parts.append("second start" if self.second else "first start")
        return ", ".join(parts)

    @property
    def cache_key(self) -> tuple:
        """Starts sharing a cache directory: a first start and the second start after it."""
        return (self.engine, self.warmup, self.verify, self.service, tuple(sorted(self.gpu.items())))


@dataclass
class Start:
    label: str
    config: dict
    round: int
    listening_s: float  # process start -> /healthz answered
    ready_s: float  # process start -> /readyz 200
    load_s: float  # tts_model_load_seconds
    warmup_s: float  # tts_warmup_seconds
    phases: dict[str, float]
    first_request_s: float
    steady_s: list[float]

    @property
    def loaded_s(self) -> float:
        """Process start -> engine loaded (ready, less the warmup)."""
        return self.ready_s - self.warmup_s

    @property
    def steady_median_s(self) -> float:
        return statistics.median(self.steady_s)

    def summary(self) -> dict:
        return {
            **asdict(self),
            "loaded_s": self.loaded_s,
            "steady_median_s": self.steady_median_s,
            "first_over_steady": self.first_request_s / self.steady_median_s,
        }


async def _poll(server: Server, path: str, session: aiohttp.ClientSession, deadline: float) -> float:
    """Seconds from process start until ``path`` answered 200."""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"service exited with {server.proc.returncode}")
        try:
            async with session.get(server.url + path) as response:
                if response.status == 200:
                    return time.perf_counter() - server.started
        except (TimeoutError, aiohttp.ClientError):
            pass
        await asyncio.sleep(0.005)  # polling a condition, bounded by the deadline
    raise TimeoutError(f"{path} did not answer 200")


async def _speak(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.post(url + "/v1/audio/speech", json={"input": TEXT, "response_format": "pcm"}) as r:
        body = await r.read()
        if r.status != 200 or not body:
            raise RuntimeError(f"synthesis answered {r.status}: {body[:200]!r}")
    return time.perf_counter() - started


async def measure(config: Config, env: dict[str, str], round_: int, steady: int) -> Start:
    server = Server({**env, "TTS_WARMUP": "true" if config.warmup else "false"})
    try:
        deadline = time.monotonic() + 600
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            listening = await _poll(server, "/healthz", session, deadline)
            ready = await _poll(server, "/readyz", session, deadline)
            async with session.get(server.url + "/metrics") as response:
                samples = samples_of(await response.text())
            first = await _speak(session, server.url)
            rest = [await _speak(session, server.url) for _ in range(steady)]
    finally:
        server.stop()
    phases = {
        dict(labels)["phase"]: value
        for (name, labels), value in samples.items()
        if name == "tts_startup_phase_seconds"
    }
    return Start(
        label=config.label,
        config=asdict(config),
        round=round_,
        listening_s=listening,
        ready_s=ready,
        load_s=samples.get(("tts_model_load_seconds", ()), float("nan")),
        warmup_s=samples.get(("tts_warmup_seconds", ()), 0.0),
        phases=phases,
        first_request_s=first,
        steady_s=rest,
    )


def chattts_env(checkpoint: Path, verify: bool, gpu: dict[str, str]) -> dict[str, str]:
    env = {
        **checkpoints.chattts_env(checkpoint),
        "TTS_MAX_NEW_TOKENS": str(TOKENS),
        "TTS_MIN_NEW_TOKENS": str(TOKENS),
        "TTS_MODEL_VERIFY": "true" if verify else "false",
        "TTS_MODEL_SHA256_FILE": str(checkpoints.ensure_sha256_map(checkpoint)) if verify else "",
    }
    if gpu:
        env |= {"TTS_DEVICE": "cuda", "TTS_TORCH_THREADS": "1", **gpu}
    return env


def matrix(quick: bool, gpu: bool, baseline: bool) -> list[Config]:
    if gpu:
        configs = []
        for loading in ("LAZY", "EAGER"):
            for compile_ in ("false", "true"):
                knobs = {"CUDA_MODULE_LOADING": loading, "TTS_COMPILE": compile_}
                for warmup in (False, True):
                    configs += [
                        Config("chattts", warmup, True, second, gpu=knobs) for second in (False, True)
                    ]
        return configs
    configs = [
        Config("chattts", warmup, verify, second)
        for verify in (False, True)
        for warmup in (False, True)
        for second in (False, True)
    ]
    configs += [Config("espeak", warmup) for warmup in (False, True)]
    if baseline:
        configs += [Config("chattts", warmup, service="baseline") for warmup in (False, True)]
    if quick:
        configs = [c for c in configs if not c.verify or c.warmup]
    return configs


def has_cuda() -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def _median(starts: list[Start], value) -> float:
    values = [value(s) for s in starts]
    return statistics.median(values) if values else float("nan")


def summarise(starts: list[Start]) -> list[dict]:
    """Per configuration: medians over rounds."""
    rows = []
    for label in dict.fromkeys(s.label for s in starts):
        mine = [s for s in starts if s.label == label]
        phases = sorted({p for s in mine for p in s.phases}, key=list(mine[0].phases).index)
        rows.append(
            {
                "label": label,
                "config": mine[0].config,
                "rounds": len(mine),
                "listening_s": _median(mine, lambda s: s.listening_s),
                "loaded_s": _median(mine, lambda s: s.loaded_s),
                "ready_s": _median(mine, lambda s: s.ready_s),
                "warmup_s": _median(mine, lambda s: s.warmup_s),
                "phases": {p: _median(mine, lambda s, p=p: s.phases.get(p, 0.0)) for p in phases},
                "first_request_s": _median(mine, lambda s: s.first_request_s),
                "steady_s": _median(mine, lambda s: s.steady_median_s),
                "first_over_steady": _median(mine, lambda s: s.first_request_s / s.steady_median_s),
                "ready_over_loaded": _median(mine, lambda s: s.ready_s / s.loaded_s),
            }
        )
    return rows


def goals(rows: list[dict]) -> list[dict]:
    """The issue's goals, each a ratio of figures measured in this run."""
    by = {
        (r["config"]["engine"], r["config"]["warmup"], r["config"]["verify"], r["config"]["second"]): r
        for r in rows
        if r["config"]["service"] == "this" and not r["config"]["gpu"]
    }
    found = []
    for verify in (False, True):
        v = "verify on" if verify else "verify off"
        for second in (False, True):
            on, off = by.get(("chattts", True, verify, second)), by.get(("chattts", False, verify, second))
            if on and off:
                start = "second start" if second else "first start"
                found.append(
                    {
                        "goal": f"ready with warmup / loaded without warmup ({v}, {start})",
                        "value": on["ready_s"] / off["ready_s"],
                        "target": f"<= {GOAL_READY}",
                        "met": on["ready_s"] / off["ready_s"] <= GOAL_READY,
                    }
                )
        for second in (False, True):
            on = by.get(("chattts", True, verify, second))
            if on:
                start = "second start" if second else "first start"
                found.append(
                    {
                        "goal": f"first request after ready / steady state ({v}, warmup on, {start})",
                        "value": on["first_over_steady"],
                        "target": f"<= {GOAL_FIRST}",
                        "met": on["first_over_steady"] <= GOAL_FIRST,
                    }
                )
        first, second = by.get(("chattts", True, verify, False)), by.get(("chattts", True, verify, True))
        if first and second:
            # Unverified weights on a CPU leave nothing to remember (no hashes; the text path
            # compiles nothing): there the ratio is context, ~1 expected.
            found.append(
                {
                    "goal": f"second start / first start, process start -> ready ({v}, warmup on)",
                    "value": second["ready_s"] / first["ready_s"],
                    "target": "< 1" if verify or meta_gpu(first) else "(context: nothing cached)",
                    "met": second["ready_s"] < first["ready_s"] if verify or meta_gpu(first) else None,
                }
            )
    off = by.get(("chattts", False, False, False))
    if off:
        found.append(
            {
                "goal": "first request without warmup / steady state (what warmup saves)",
                "value": off["first_over_steady"],
                "target": "(context)",
                "met": None,
            }
        )
    return found


def meta_gpu(row: dict) -> bool:
    return bool(row["config"]["gpu"])


def _s(x: float) -> str:
    return f"{x:.2f}" if x == x else ""


def report(starts: list[Start], rows: list[dict], meta: dict) -> str:
    lines = [
        "# Cold start, phase by phase (issue #19)",
        "",
        *meta["header"],
        f"- checkpoint: random weights, {meta['geometry']} geometry ({meta['checkpoint_mb']:.0f} MB); every "
        f"ChatTTS request {TOKENS} audio tokens; espeak the embedded default",
        f"- {meta['rounds']} round(s), configurations interleaved, each start a fresh process; medians over rounds",
        f"- device: {meta['device']}",
        "",
        "## Goals (ratios within this run)",
        "",
        "| goal | value | target | met |",
        "|---|---:|---|---|",
    ]
    for g in meta["goals"]:
        met = "" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(f"| {g['goal']} | {g['value']:.2f} | {g['target']} | {met} |")
    lines += [
        "",
        "## Start-up, seconds (medians)",
        "",
        "| configuration | listening | loaded | warmup | ready | first request | steady | first / steady "
        "| ready / loaded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {_s(r['listening_s'])} | {_s(r['loaded_s'])} | {_s(r['warmup_s'])} "
            f"| {_s(r['ready_s'])} | {_s(r['first_request_s'])} | {_s(r['steady_s'])} "
            f"| {_s(r['first_over_steady'])} | {_s(r['ready_over_loaded'])} |"
        )
    phases = list(dict.fromkeys(p for r in rows for p in r["phases"]))
    lines += [
        "",
        "*listening*: process start -> `/healthz` answers (Python, the service's own imports, the HTTP",
        "server; the engine loads after).  *loaded*: -> engine loaded (`/readyz` less the warmup).  *ready*:",
        "-> `/readyz` 200.  *first request*: its latency, sent right after ready.  *steady*: the median of",
        "the next requests in the same process.",
        "",
        "## The engine's phases, seconds (medians, from `tts_startup_phase_seconds`)",
        "",
        "| configuration | " + " | ".join(phases) + " |",
        "|---|" + "---:|" * len(phases),
    ]
    for r in rows:
        if r["phases"]:
            cells = [_s(r["phases"][p]) if p in r["phases"] else "" for p in phases]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every start",
        "",
        "| configuration | round | listening | ready | warmup | first request | steady |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in starts:
        lines.append(
            f"| {s.label} | {s.round} | {_s(s.listening_s)} | {_s(s.ready_s)} | {_s(s.warmup_s)} "
            f"| {_s(s.first_request_s)} | {_s(s.steady_median_s)} |"
        )
    return "\n".join(lines) + "\n"


def rewrite_report(path: Path) -> None:
    """Write the Markdown report again from a run's JSON (after the report's format changed)."""
    data = json.loads(path.read_text())
    if "header" not in data["meta"]:  # runs before the header was kept: the report's own lines
        lines = path.with_suffix(".md").read_text().splitlines()
        data["meta"]["header"] = [line for line in lines if line.startswith(HEADER_KEYS)]
    known = {f.name for f in dataclasses.fields(Start)}
    starts = [Start(**{k: v for k, v in s.items() if k in known}) for s in data["starts"]]
    rows = summarise(starts)
    data["meta"]["goals"] = goals(rows)
    path.with_suffix(".md").write_text(report(starts, rows, data["meta"]))
    path.write_text(json.dumps({**data, "configurations": rows}, indent=1))


async def run(args: argparse.Namespace) -> int:
    if args.rewrite:
        rewrite_report(args.rewrite)
        return 0
    if args.gpu and not has_cuda():
        print(
            "bench/cold_start.py --gpu: no CUDA device here (torch.cuda.is_available() is false); nothing measured"
        )
        return 0
    quick = args.quick
    full = not quick
    checkpoint = checkpoints.ensure_checkpoint(full, args.cache)
    configs = matrix(quick, args.gpu, args.baseline is not None)
    rounds = 1 if quick else args.rounds
    steady = 2 if quick else 3
    caches: dict[tuple, Path] = {}
    starts: list[Start] = []
    with tempfile.TemporaryDirectory(prefix="kubetts-cold-start-") as scratch:
        for round_ in range(1, rounds + 1):
            caches.clear()  # each round's first starts begin with empty caches
            for config in configs:
                env: dict[str, str] = {"TTS_ENGINE": config.engine}
                if config.engine == "chattts":
                    env = chattts_env(checkpoint, config.verify, config.gpu)
                    if config.service == "this":
                        if not config.second:
                            caches[config.cache_key] = Path(tempfile.mkdtemp(dir=scratch))
                        env["TTS_CACHE_DIR"] = str(caches[config.cache_key])
                if config.service == "baseline":
                    env["PYTHONPATH"] = str(args.baseline / "service")
                    env.pop("TTS_MODEL_SHA256_FILE", None)
                start = await measure(config, env, round_, steady)
                starts.append(start)
                print(
                    f"round {round_}: {config.label}: ready {start.ready_s:.2f}s "
                    f"(warmup {start.warmup_s:.2f}s), first {start.first_request_s:.2f}s, "
                    f"steady {start.steady_median_s:.2f}s",
                    flush=True,
                )
    rows = summarise(starts)
    size = sum(p.stat().st_size for p in (checkpoint / "asset").rglob("*") if p.is_file())
    meta = {
        "geometry": "official" if full else "tiny",
        "checkpoint_mb": size / 2**20,
        "rounds": rounds,
        "device": "CUDA" if args.gpu else "CPU (no GPU used)",
        "commit": environment.commit(),
        "header": environment.header_lines(),
        "baseline": str(args.baseline) if args.baseline else None,
    }
    meta["goals"] = goals(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if quick else "-gpu" if args.gpu else ""
    stem = args.out_dir / f"{environment.now():%Y-%m-%d}-{environment.machine_slug()}-cold-start{suffix}"
    text = report(starts, rows, meta)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "configurations": rows, "starts": [s.summary() for s in starts]}, indent=1)
    )
    print(text)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke: the tiny checkpoint, one round")
    parser.add_argument("--gpu", action="store_true", help="measure on CUDA (exits 0 saying so without one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout whose service/ to start as well")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--rewrite", type=Path, metavar="JSON", help="only rewrite the report of a run")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
