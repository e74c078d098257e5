"""What an engine's exception means, so the batcher reacts in proportion.

Retrying a failed batch in halves (the batcher) is right for two kinds of failure: a batch
too large for memory fits once smaller, and one poisoned input ends up failing alone.  It
is wrong for a broken device: after a CUDA "illegal memory access" or a "device-side
assert" the CUDA context is unusable, every later call fails the same way, and halving a
batch of 8 costs 15 more engine calls while every queued request's deadline runs out.
Such a failure ends the engine: its batch fails at once, the queue is answered, and the
service reports itself unready and unhealthy so Kubernetes routes elsewhere and restarts
the pod.

Classification is by exception type where the framework has one (``torch.OutOfMemoryError``,
Python's ``MemoryError``) and otherwise by the messages CUDA, cuBLAS and cuDNN put in a
``RuntimeError`` (torch >= 2.8 raises ``torch.AcceleratorError`` with the same text).
"""

from __future__ import annotations

import enum


class Failure(enum.Enum):
    INPUT = "input"  # tied to the batch's inputs: retry in halves to isolate the culprit
    OUT_OF_MEMORY = "out_of_memory"  # retry in halves: a smaller batch may fit
    DEVICE = "device"  # the device is broken: nothing more can run in this process


OUT_OF_MEMORY_MESSAGES = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")
# Errors after which the CUDA context (or the GPU) is unusable for the rest of the process.
DEVICE_MESSAGES = (
    "illegal memory access",  # cudaErrorIllegalAddress
    "device-side assert",  # cudaErrorAssert
    "unspecified launch failure",  # cudaErrorLaunchFailure
    "misaligned address",  # cudaErrorMisalignedAddress
    "illegal instruction",  # cudaErrorIllegalInstruction
    "uncorrectable ecc error",  # cudaErrorECCUncorrectable
    "launch timed out",  # cudaErrorLaunchTimeout
    "hardware stack error",  # cudaErrorHardwareStackError
    "cuda error: unknown error",  # what a GPU lost mid-call (an Xid) usually surfaces as
    "fallen off the bus",  # Xid 79, as the driver reports a lost GPU
    "cuda driver error",
    "busy or unavailable",  # cudaErrorDevicesUnavailable
    "no cuda gpus are available",
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
)


def classify_failure(error: BaseException) -> Failure:
    """The kind of ``error`` (raised by an engine call), by type first, then by message."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return Failure.OUT_OF_MEMORY
    message = str(error).lower()
    if any(m in message for m in OUT_OF_MEMORY_MESSAGES):
        return Failure.OUT_OF_MEMORY
    if any(m in message for m in DEVICE_MESSAGES):
        return Failure.DEVICE
    return Failure.INPUT
