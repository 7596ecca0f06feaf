"""Helpers for the vLLM engine tests (a module of its own: test modules import it by name)."""

from __future__ import annotations

import os

import pytest

from llenergymeasure.cpu_features import FP8_KV_CACHE_NEEDS, read_cpu_features

KV_CACHE_BYTES = 64 * 2**20
"""A fixed, small KV cache: vLLM on a CPU otherwise reserves most of the host's memory."""


_CPU = read_cpu_features()
needs_fp8_kv_cache = pytest.mark.skipif(
    not _CPU.fp8_kv_cache,
    reason=f"vLLM-CPU's fp8 KV cache needs {FP8_KV_CACHE_NEEDS}; {_CPU.model} has neither",
)
"""For tests that start an engine with an fp8 KV cache: decided from the CPU's flags."""


def engine_processes() -> set[int]:
    """Pids of live processes descended from this one: vLLM's engine core and workers. Not
    zombies (dead, only waiting to be reaped) nor multiprocessing's resource tracker, which
    stays for the life of any process that used spawn and holds no engine state."""
    import psutil  # a vLLM dependency

    alive = set()
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "multiprocessing.resource_tracker" in " ".join(child.cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        alive.add(child.pid)
    return alive
