"""Where the ChatTTS engine runs: the device, the CPU threads a container may use, and the
CUDA caching allocator's pool.  Kept apart from the engine's synthesis code: these run once,
at load."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from .chattts_model import ModelError

log = logging.getLogger("tts_service.engines.chattts")


def container_cpus() -> int:
    """CPUs this process may use: the cgroup's CPU limit if any, else its affinity mask."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def select_device(torch: Any, wanted: str) -> Any:
    """``TTS_DEVICE`` (auto, cuda, cpu) as a torch device; cuda without one is a clear error."""
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ModelError("TTS_DEVICE=cuda but no CUDA device is available")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def reserve_cuda_pool(torch: Any, device: Any, megabytes: int) -> None:
    """Grow the CUDA caching allocator once to TTS_CUDA_MEMORY_POOL_MB (GPU only).

    Allocating and freeing one large block leaves it reserved in torch's caching
    allocator, so later batches reuse it instead of growing (and fragmenting) memory
    call by call.  It does not bound memory: a batch that needs more still allocates
    more.  Not verified on real GPU hardware (none on the development machines).
    """
    if not megabytes or device.type != "cuda":
        return
    block = torch.empty(megabytes * 1024 * 1024, dtype=torch.uint8, device=device)
    del block
    log.info("reserved %d MB in the CUDA caching allocator", megabytes)
