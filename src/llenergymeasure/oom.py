"""Out-of-memory failures, told apart from the rest: a sweep over batch sizes expects some
configurations not to fit, and the user needs `oom` and the values that did not fit, not a
traceback. Shared by the worker (its exception) and the host (a worker log, for engines whose
out-of-memory error happens in a child process the worker only hears died)."""

from __future__ import annotations

import re

# What engines say when memory runs out: torch's allocators (CUDA, ROCm, CPU), the CUDA runtime
# and cuBLAS, and vLLM's KV-cache sizing (raised as ValueError in its engine process).
LOG_PATTERN = re.compile(
    r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory|cudaErrorMemoryAllocation"
    r"|CUBLAS_STATUS_ALLOC_FAILED|HIP out of memory|DefaultCPUAllocator: can't allocate memory"
    r"|No available memory for the cache blocks|larger than the available KV cache memory"
)
# In an exception's own text a plain "out of memory" is specific enough (TensorRT-LLM's
# runtime errors say it that way); in a whole log it is not.
EXCEPTION_PATTERN = re.compile(LOG_PATTERN.pattern + r"|\bout of memory\b", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """exc, or an exception it was raised from, says memory ran out."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        if EXCEPTION_PATTERN.search(f"{type(current).__name__}: {current}"):
            return True
        current = current.__cause__ or current.__context__
    return False


def log_says_out_of_memory(text: str) -> str | None:
    """The first log line that reports running out of memory, if any."""
    for line in text.splitlines():
        if LOG_PATTERN.search(line):
            return line.strip()
    return None
