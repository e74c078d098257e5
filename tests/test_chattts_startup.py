"""The ChatTTS engine's start: heavy imports off the HTTP server's path, and a warmup that
leaves the first request at steady-state cost, shown by the engine's own counters.

Each case runs in a fresh process (tests/warmup_probe.py): compilations and lazy imports
are per process.  ``first_call_counters`` counts one-time costs (modules imported, numba
compilations; on CUDA allocator segments, under torch.compile its graphs); a request that
pays none leaves them unchanged.  On a CPU the text path is what used to cost (numba
compiling ChatTTS's normalizer); it compiles nothing now, warmup or not, and ChatTTS's own
normalizer called directly shows the counters see such a cost.  No wall-clock time is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def probe(checkpoint, cache_dir: Path, *, path: str, warmup: bool, chattts_normalizer: bool = False) -> dict:
    settings = {
        "engine": "chattts",
        "model_dir": str(checkpoint["asset"]),
        "chattts_config": str(checkpoint["config"]),
        "model_verify": False,
        "cache_dir": str(cache_dir),
        "torch_threads": 1,
        "max_new_tokens": 24,
        "max_batch_size": 4,
    }
    config = json.dumps(
        {"settings": settings, "path": path, "warmup": warmup, "chattts_normalizer": chattts_normalizer}
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(HERE / "warmup_probe.py"), config],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def changed(request: dict) -> dict:
    return {k: (v, request["after"][k]) for k, v in request["before"].items() if request["after"][k] != v}


@pytest.mark.parametrize("path", ["request", "continuous"])
def test_after_warmup_the_first_requests_pay_no_first_call_costs(checkpoint, tmp_path, path):
    report = probe(checkpoint, tmp_path / "cache", path=path, warmup=True)
    for request in report["requests"]:  # whole and streamed, Chinese and English
        assert changed(request) == {}
    phases = report["phases"]
    warmed = "warmup_decode_loop" if path == "continuous" else "warmup_generation"
    assert warmed in phases and "warmup_full_batch" not in phases  # a CPU: no allocator to fill


def test_the_text_path_compiles_nothing_even_without_warmup(checkpoint, tmp_path):
    report = probe(checkpoint, tmp_path / "cache", path="request", warmup=False, chattts_normalizer=True)
    for request in report["requests"]:
        assert request["after"]["numba_compilations"] == 0  # homophones without ChatTTS's numba code
    # The counters do see such a cost: ChatTTS's own normalizer compiles on its first call.
    own = report["chattts_normalizer"]
    assert own["after"]["numba_compilations"] > own["before"]["numba_compilations"] == 0


def test_the_service_answers_before_torch_is_imported():
    # Creating the app and its chattts engine must not import torch, transformers or ChatTTS
    # (seconds): the worker thread imports them while /healthz already answers.
    script = (
        "import sys\n"
        "from tts_service.app import create_app\n"
        "from tts_service.settings import Settings\n"
        "create_app(Settings(engine='chattts', model_dir='/nonexistent'))\n"
        "print(sorted(m for m in ('torch', 'transformers', 'ChatTTS', 'numba') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
