"""The benchmarks still run and write their reports (smoke only: no timing is asserted), and
the pure pieces they compute with say what they should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from http_load import CORPORA, Point, corpus, percentile  # noqa: E402
from lifecycle import rss_slope  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_long_form_bench_runs_both_servers_and_accounts_for_every_request(tmp_path):
    out = tmp_path / "long-form.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "long_form.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert {(r["server"], r["mode"]) for r in data["long_text"]} == {
        (server, mode) for server in ("segmented", "one generation") for mode in ("whole", "stream")
    }
    for r in data["long_text"]:
        # Every row ran to its own budget (TTS_MIN_NEW_TOKENS) and each one was counted.
        assert r["truncated"] == r["segments"] >= 1
    segmented = {r["mode"]: r for r in data["long_text"] if r["server"] == "segmented"}
    assert segmented["whole"]["segments"] == segmented["stream"]["segments"] > 1
    assert segmented["whole"]["audio_seconds"] == pytest.approx(
        segmented["stream"]["audio_seconds"], abs=0.01
    )
    for mix in data["mix"]:
        assert mix["sent"] == mix["served"], mix  # nothing rejected, lost or timed out
    assert "## Ratios (same run)" in out.read_text() and "commit:" in out.read_text()


def test_quick_suite_runs_every_scenario_and_writes_report_json_and_plots(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "suite.py"), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (report,) = tmp_path.glob("*-quick.md")
    text = report.read_text()
    for heading in ("## Before / after", "## Expectations", "## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    assert all(f"]({p.name})" in text for p in pngs)  # the report shows each plot

    data = json.loads(report.with_suffix(".json").read_text())
    # Both engines, both setups, and every request accounted for: nothing lost or wrong, no
    # rejections below the queue limit (the smoke loads are small).
    for engine in ("espeak", "chattts"):
        points = data["points"][engine]
        assert {p["label"] for p in points} == {"batching on (8, 80 ms)", "batching off (1)"}
        for p in points:
            assert p["sent"] == p["served"] > 0 and p["errors"] == 0, p
            assert p["batches"] > 0 and p["rss_mb"], p  # read from the service's metrics and /proc
        unbatched = [p for p in points if p["label"] == "batching off (1)"]
        assert all(p["mean_batch"] == 1 for p in unbatched)
    assert {r["batch_size"] for r in data["engine_alone"]["chattts"]["results"]} == {1, 2, 4, 8}
    assert all(n == 16 for r in data["engine_alone"]["chattts"]["results"] for n in r["tokens"])
    for engine in ("espeak", "chattts"):  # the server next to the engine alone, round by round
        pair = data["server_vs_engine"][engine]
        assert len(pair["rounds"]) == data["plan"]["pairing"][engine]["rounds"]
        for r in pair["rounds"]:
            assert r["server_errors"] == 0 and r["engine_items_per_second"] > 0
            assert r["share_percent"] == pytest.approx(
                r["server_requests_per_second"] / r["engine_items_per_second"] * 100
            )
        shares = sorted(r["share_percent"] for r in pair["rounds"])
        assert shares[0] <= pair["median_share_percent"] <= shares[-1]
    assert {(s["label"], s["warmup"]) for s in data["cold_start"]} == {
        ("espeak", True),
        ("espeak", False),
        ("chattts", True),
        ("chattts", False),
    }
    assert data["soak"]["served"] == data["soak"]["sent"] >= 250
    for burst in data["overload"]["bursts"]:
        assert burst["sent"] == burst["served"] + burst["rejected"] + burst["timed_out"]
        assert burst["lost"] == burst["other"] == burst["bad_audio"] == burst["retry_after_missing"] == 0
    assert data["expectations"] and all(isinstance(c["held"], bool) for c in data["expectations"])


def test_quick_overload_runs_and_reports(tmp_path):
    out = tmp_path / "overload.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overload.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| burst | rate req/s |" in out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    # Definite answers only: every request sent was served, rejected or timed out -- none lost,
    # no unexpected status, no wrong audio -- and the drain answered every queued request.
    for burst in data["bursts"]:
        assert burst["sent"] == burst["served"] + burst["rejected"] + burst["timed_out"]
        assert burst["lost"] == burst["other"] == burst["bad_audio"] == burst["retry_after_missing"] == 0
    drain = data["drain"]
    assert drain["queued"] > 0 and drain["completed"] == drain["sent"] and drain["exit_code"] == 0


# -- the arithmetic ------------------------------------------------------------------------------


def point_with_rss(samples: list[tuple[float, float]]) -> Point:
    return Point("soak", "open", "mixed", rss_mb=samples)


def test_rss_slope_is_flat_for_flat_memory_despite_a_warm_up_rise():
    warm = [(t / 10, 80 + t) for t in range(10)]  # the first 10 %: pools filling up
    steady = [(1 + t / 10, 90 + (0.5 if t % 2 else -0.5)) for t in range(90)]  # noise around 90 MB
    slope = rss_slope(point_with_rss(warm + steady), warm_share=0.1)
    assert abs(slope.growth_percent) < 0.5
    assert slope.first_mb == 80 and slope.peak_mb == 90.5


def test_rss_slope_measures_a_steady_leak():
    leak = [(float(t), 100 + 0.1 * t) for t in range(101)]  # +10 MB over the run
    slope = rss_slope(point_with_rss(leak), warm_share=0.1)
    # The fit starts at t=10 (101 MB) and ends at t=100 (110 MB): +8.9 %.
    assert slope.start_mb == pytest.approx(101) and slope.end_mb == pytest.approx(110)
    assert slope.growth_percent == pytest.approx(9 / 101 * 100)


def test_rss_slope_needs_samples():
    with pytest.raises(ValueError):
        rss_slope(point_with_rss([(0.0, 1.0)]))


def test_corpus_is_fixed_by_its_seed_and_short():
    assert corpus("zh", 50, 7) == corpus("zh", 50, 7) != corpus("zh", 50, 8)
    lengths = [len(t) for t in CORPORA["zh"]]  # the write-up's ~12-character sentences
    assert min(lengths) >= 10 and max(lengths) <= 16 and 11 <= sum(lengths) / len(lengths) <= 13
    assert set(corpus("mixed", 400, 1)) == set(CORPORA["mixed"])


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51 and percentile(values, 0.99) == 100
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN when nothing was served


def test_point_counts_every_failure_kind_as_an_error():
    p = Point("x", "closed", "zh", sent=10, served=4, rejected=1, timed_out=2, other=1, lost=1, bad_audio=1)
    assert p.errors == 6 and p.sent == p.served + p.errors


def test_quick_continuous_bench_measures_every_server_and_reports_the_targets(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "continuous.py"),
            "--quick",
            "--out-dir",
            str(tmp_path),
            "--ray-lib",
            str(tmp_path / "no-ray"),  # the Ray Serve peer is reported as not measured
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (report,) = tmp_path.glob("*-continuous-quick.md")
    data = json.loads(report.with_suffix(".json").read_text())
    servers = {r["server"] for r in data["runs"]}
    assert servers == {
        "espeak default",
        "espeak batch 1",
        "request",
        "continuous",
        "one-at-a-time",
    }
    for run in data["runs"]:
        assert run["served"] == run["sent"] > 0, run  # every request answered with audio
    text = report.read_text()
    assert "## Targets of #18" in text and "commit:" in text and "Ray Serve not installed" in text
    assert report.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)


def test_a_backlog_is_told_from_a_steady_open_loop_run():
    from continuous import Run

    def run(rate: float, latency, status=lambda i: 200) -> Run:
        sent = [i / rate for i in range(60)]
        results = [(i, 10, latency(i), status(i), sent[i]) for i in range(60)]
        return Run("s", f"{rate}/s open", offered=rate, results=results, steady_from=20, steady_to=60 / rate)

    steady = run(1.0, lambda i: 1.0 + 0.1 * (i % 3))
    growing = run(1.0, lambda i: 1.0 + 0.5 * i)  # served at 1/1.5 of the offered rate
    failed = run(1.0, lambda i: 1.0, status=lambda i: 0 if i == 59 else 200)
    assert steady.kept_up and not growing.kept_up and not failed.kept_up
    assert abs(steady.steady_rps - 1.0) < 0.1 and abs(growing.steady_rps - 1 / 1.5) < 0.05


def test_a_batch_answered_at_once_is_one_completion_event():
    from continuous import Run

    # Batches of 8 answered together every 4 s: 2 requests per second, wherever the window cuts.
    results = [(i, 10, 4.0 * (i // 8 + 1) - i * 0.25, 200, i * 0.25) for i in range(96)]
    for start in (0.0, 3.0, 5.5):
        run = Run("r", "2/s open", offered=2.0, results=results, steady_from=start, steady_to=start + 20)
        assert abs(run.steady_rps - 2.0) < 1e-9, start


def test_quick_cold_start_bench_measures_every_start_and_reports_the_goals(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cold_start.py"), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (report,) = tmp_path.glob("*-cold-start-quick.md")
    data = json.loads(report.with_suffix(".json").read_text())
    labels = {row["label"] for row in data["configurations"]}
    assert "chattts, warmup on, verify on, second start" in labels and "espeak, warmup on" in labels
    for start in data["starts"]:
        assert 0 < start["listening_s"] <= start["ready_s"] and start["steady_s"], start
        if start["config"]["engine"] == "chattts":
            # The engine's phases came from tts_startup_phase_seconds; warmup only when asked.
            assert {"imports", "weight_loading"} <= set(start["phases"])
            assert ("warmup_decode_loop" in start["phases"]) == start["config"]["warmup"]
    goals = {g["goal"] for g in data["meta"]["goals"]}
    assert "second start / first start, process start -> ready (verify on, warmup on)" in goals
    assert "## Goals (ratios within this run)" in report.read_text() and "commit:" in report.read_text()


def test_the_gpu_cold_start_bench_says_so_where_there_is_no_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the measurement would run")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cold_start.py"), "--gpu", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "no CUDA device here" in result.stdout and "nothing measured" in result.stdout
    assert list(tmp_path.iterdir()) == []
