"""The load benchmark still runs and writes its report (no timings are asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_compare_runs_and_reports(tmp_path):
    out = tmp_path / "report.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "http_load.py"),
            "--compare",
            "--quick",
            "--concurrency",
            "1,4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "| setup | concurrency |" in out.read_text()
    points = json.loads(out.with_suffix(".json").read_text())
    assert {p["setup"] for p in points} == {"batching on (8, 80 ms)", "batching off (1)"}
    assert all(p["errors"] == 0 and p["requests"] >= 4 for p in points)


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
