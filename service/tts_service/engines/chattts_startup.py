"""What the ChatTTS engine does to start fast, and the counters that show a warm engine.

Measured on the official geometry on a CPU (``bench/cold_start.py``), a start used to pay:
every weight file hashed twice (the engine's check, then ``Chat.load``'s own), every module
randomly initialised before its weights were copied over it, and, on the first request,
numba compiling ChatTTS's normalizer (~1.1 s; now replaced, :mod:`.chattts_homophones`) and
a round of lazy imports.  This module holds:

- :func:`lean_load`: while ChatTTS builds its modules, ``torch.nn.init``'s fills do
  nothing (every parameter is loaded next), and the seconds spent reading weights are
  counted apart from building modules, for the start-up breakdown.  (Reading is already
  memory-mapped: safetensors' ``safe_open`` returns tensors over the mapped file, ~2 ms for
  145 MB; the one copy is into each module's own parameters.)
- :func:`first_call_counters`: one-time costs a call can pay, as counts -- modules
  imported, numba compilations, CUDA allocator segments, torch.compile graphs.  A warmup
  is complete when a request after it leaves them all unchanged; the tests assert that
  rather than timing anything.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from typing import Any

# torch.nn.init's in-place fills that module constructors call (nn.Linear, nn.Conv1d,
# nn.Embedding, LayerNorm's reset_parameters and friends).
INIT_FILLS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


def _unfilled(tensor: Any, *args: Any, **kwargs: Any) -> Any:
    return tensor


@contextlib.contextmanager
def lean_load(torch: Any, pretrained_cls: Any) -> Iterator[list[float]]:
    """ChatTTS's ``Chat._load`` inside builds its modules without random initialisation and
    counts the seconds spent loading weights (a one-element list, final on exit).

    While inside, ``torch.nn.init``'s fills do nothing, except within
    ``pretrained_cls.from_pretrained`` (the GPT's Llama: Hugging Face skips the fills of what
    it loads itself and must fill what its checkpoint lacks).  Everything else is loaded
    next with ``load_state_dict(strict=True)``, which raises on a missing key, so no
    parameter keeps unfilled memory.  Weight loading is the time in the outermost
    ``load_state_dict`` and ``from_pretrained`` calls; the rest is module construction.
    Process-wide while it lasts: only the worker thread's load uses it.
    """
    init = torch.nn.init
    fills = {name: getattr(init, name) for name in INIT_FILLS if hasattr(init, name)}
    module_cls = torch.nn.Module
    original_load = module_cls.load_state_dict
    own_pretrained = vars(pretrained_cls).get("from_pretrained")
    original_pretrained = pretrained_cls.from_pretrained.__func__
    spent = [0.0]
    depth = [0]  # from_pretrained calls load_state_dict itself: time the outermost call only

    def set_fills(skip: bool) -> None:
        for name, fill in fills.items():
            setattr(init, name, _unfilled if skip else fill)

    def timed(fn, filling: bool):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            started = time.perf_counter()
            if filling:
                set_fills(False)
            try:
                return fn(*args, **kwargs)
            finally:
                if filling:
                    set_fills(True)
                spent[0] += time.perf_counter() - started
                depth[0] -= 1

        return wrapper

    set_fills(True)
    module_cls.load_state_dict = timed(original_load, filling=False)
    pretrained_cls.from_pretrained = classmethod(timed(original_pretrained, filling=True))
    try:
        yield spent
    finally:
        set_fills(False)
        module_cls.load_state_dict = original_load
        if own_pretrained is None:
            del pretrained_cls.from_pretrained
        else:
            pretrained_cls.from_pretrained = own_pretrained


def _normalizer_dispatchers() -> list[Any]:
    from ChatTTS import norm
    from numba.core.dispatcher import Dispatcher

    return [value for value in vars(norm).values() if isinstance(value, Dispatcher)]


def numba_compilations() -> int:
    """Machine-code versions of ChatTTS's normalizer functions compiled in this process (none
    unless a text reached ChatTTS's own normalizer: see :mod:`.chattts_homophones`)."""
    return sum(len(dispatcher.overloads) for dispatcher in _normalizer_dispatchers())


def first_call_counters(torch: Any, device: Any, compiled: bool) -> dict[str, int]:
    """ChatTTS's one-time costs paid so far in this process, as counts (the engine adds the
    modules imported, which every engine counts)."""
    counters = {"numba_compilations": numba_compilations()}
    if device is not None and device.type == "cuda":
        stats = torch.cuda.memory_stats(device)
        counters["cuda_segments_allocated"] = int(stats.get("segment.all.allocated", 0))
        counters["cuda_alloc_retries"] = int(stats.get("num_alloc_retries", 0))
    if compiled:
        from torch._dynamo.utils import counters as dynamo

        counters["compiled_graphs"] = int(dynamo["stats"]["unique_graphs"])
    return counters
