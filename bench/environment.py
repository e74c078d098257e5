"""What a benchmark report states about where it ran: machine, versions, command, date."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = ("kubetts", "aiohttp", "numpy", "espeakng-loader", "torch", "chattts", "transformers")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else platform.processor() or "unknown CPU"


def memory_gib() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return float("nan")
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 2**20 if match else float("nan")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def machine_slug() -> str:
    """A short file-name-safe machine name: ``<hostname>-<N>core``."""
    host = re.sub(r"[^a-z0-9]+", "-", platform.node().lower()).strip("-") or "machine"
    return f"{host}-{os.cpu_count()}core"


def command() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty.strip() else "")


def now() -> datetime:
    return datetime.now(UTC)


def header_lines() -> list[str]:
    """Markdown bullet lines: date, machine, versions, command."""
    return [
        f"- date: {now():%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {memory_gib():.0f} GiB, no GPU used; "
        f"{platform.platform()}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"- commit: {commit()}",
        f"- command: `{command()}`",
    ]
