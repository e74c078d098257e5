"""The random-weights ChatTTS checkpoint the benchmarks run on, and a server's env for it.

Built once per geometry under the cache directory by tests/chattts_checkpoint.py, in a
subprocess (the benchmark drivers themselves never import torch).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_checkpoint(full_size: bool, cache: Path) -> Path:
    """The checkpoint of the official geometry (``full_size``) or the tiny one, built once."""
    out = cache / ("chattts-full" if full_size else "chattts-tiny")
    if not (out / "chattts-config.json").exists():
        args = [sys.executable, str(ROOT / "tests" / "chattts_checkpoint.py"), str(out)]
        subprocess.run([*args, "--full-size"] if full_size else args, check=True, stdout=subprocess.DEVNULL)
    return out


def ensure_sha256_map(checkpoint: Path) -> Path:
    """The checkpoint's own sha256 map (``TTS_MODEL_SHA256_FILE``), written once if missing
    (checkpoints built before the builder wrote it)."""
    path = checkpoint / "sha256-map.json"
    if not path.exists():
        from tts_service.engines.chattts_model import MODEL_FILES
        from tts_service.engines.weight_hash_cache import sha256_file

        asset = checkpoint / "asset"
        path.write_text(json.dumps({key: sha256_file(asset / name) for name, key in MODEL_FILES}, indent=1))
    return path


def chattts_env(checkpoint: Path) -> dict[str, str]:
    """The service's env for the ChatTTS engine on ``checkpoint``."""
    return {
        "TTS_ENGINE": "chattts",
        "TTS_MODEL_DIR": str(checkpoint / "asset"),
        "TTS_CHATTTS_CONFIG": str(checkpoint / "chattts-config.json"),
        "TTS_MODEL_VERIFY": "false",  # random weights: their own hashes, not the official ones
    }
