"""What ships is what is tested: constraints.txt pins every runtime dependency, and the test
environment, both images, the install scripts and pyproject.toml all agree with it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ROOT / "constraints.txt"
RUNTIME_EXTRAS = ("chattts", "operator")  # what the two images install besides the base
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK_FILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", line.strip())
        assert match, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = Version(match.group(2))
    return pins


def runtime_requirements() -> list[Requirement]:
    """kubetts's own requirements: the base plus the runtime extras."""
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in RUNTIME_EXTRAS:
        reqs += [Requirement(r) for r in PYPROJECT["optional-dependencies"][extra]]
    return reqs


def applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras or {""})


def runtime_closure() -> dict[str, str]:
    """Every distribution the runtime needs, from the installed metadata: name -> version."""
    seen: dict[str, str] = {}
    todo = [(req, set(req.extras)) for req in runtime_requirements()]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} (needed by the runtime: {req}) is not installed in the test environment")
        seen[name] = dist.version
        for raw in dist.requires or []:
            dep = Requirement(raw)
            if applies(dep, extras):
                todo.append((dep, set(dep.extras)))
    return seen


def test_the_lock_pins_exact_versions():
    pins = locked()
    assert {"torch", "torchaudio", "transformers", "chattts", "aiohttp", "kopf"} <= set(pins)


def test_the_test_environment_runs_exactly_the_locked_versions():
    """The drift check: CI (./dev test) must have installed what the images install."""
    drifted = {}
    for name, version in locked().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drifted[name] = (str(version), "not installed")
            continue
        if Version(installed.public) != version:  # torch reports 2.13.0+cu130 for the 2.13.0 wheel
            drifted[name] = (str(version), str(installed))
    assert not drifted, f"installed versions differ from constraints.txt (locked, installed): {drifted}"


def test_the_lock_covers_every_runtime_dependency():
    missing = sorted(set(runtime_closure()) - set(locked()) - {"kubetts"})
    assert not missing, f"runtime dependencies without a pin in constraints.txt: {missing}"


def test_pyproject_ranges_admit_the_locked_versions():
    pins = locked()
    for req in runtime_requirements():
        version = pins[canonicalize_name(req.name)]
        assert req.specifier.contains(version, prereleases=True), f"{req} excludes the locked {version}"


def test_transformers_is_bounded_below_its_past_key_values_deprecation():
    (req,) = [r for r in runtime_requirements() if r.name == "transformers"]
    assert not req.specifier.contains("5.24.0")  # deprecates the argument ChatTTS 0.2.5 passes


@pytest.mark.parametrize("path", ["service/Dockerfile", "operator/Dockerfile"])
def test_images_install_from_the_lock(path):
    text = (ROOT / path).read_text()
    assert re.search(r"^COPY constraints\.txt ", text, re.M)
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("--constraint constraints.txt" in line for line in installs), installs
    # No version pinned beside the lock (how torch 2.5.1 ran in the image while CI tested another).
    assert not re.search(r"[A-Za-z0-9]==\d", text)


def test_development_installs_use_the_lock():
    assert "--constraint constraints.txt" in (ROOT / "scripts" / "install-chattts.sh").read_text()
    dev = (ROOT / "dev").read_text()
    assert "--constraint constraints.txt" in dev and "scripts/install-chattts.sh" in dev
