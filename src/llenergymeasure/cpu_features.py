"""The CPU features an engine's CPU build needs, read from the kernel's CPU flags.

vLLM's CPU build runs an fp8 KV cache only on x86 with AVX-512 or AMX (its attention backend
raises "FP8 KV cache on CPU requires x86 with AVX-512 or AMX." otherwise; it asks torch, whose
AVX-512 test needs the F, VL, BW and DQ subsets). Reading the flags up front lets the worker
refuse such an experiment with one clear line before starting an engine, `lem doctor` say
what this CPU can run, and tests skip with the reason instead of failing. Imports nothing
heavy: the host uses it too.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
CPUINFO_ENV = "LEM_CPUINFO"
"""Read another cpuinfo file instead (diagnosis, and tests of a CPU this machine is not)."""

AVX512_FLAGS = ("avx512f", "avx512vl", "avx512bw", "avx512dq")
AMX_FLAGS = ("amx_tile",)
FP8_KV_CACHE_NEEDS = "x86 with AVX-512 (avx512f, avx512vl, avx512bw, avx512dq) or AMX (amx_tile)"


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    flags: frozenset[str]
    x86: bool

    @property
    def avx512(self) -> bool:
        return self.x86 and all(f in self.flags for f in AVX512_FLAGS)

    @property
    def amx(self) -> bool:
        return self.x86 and all(f in self.flags for f in AMX_FLAGS)

    @property
    def fp8_kv_cache(self) -> bool:
        """vLLM's CPU build can run an fp8 KV cache here."""
        return self.avx512 or self.amx

    def describe(self) -> str:
        have = [name for name, ok in (("AVX-512", self.avx512), ("AMX", self.amx)) if ok]
        return f"{self.model}: {', '.join(have) if have else 'no AVX-512, no AMX'}"


def read_cpu_features() -> CpuFeatures:
    """This CPU's model name and flags (of the first processor: they are alike on one host)."""
    path = Path(os.environ.get(CPUINFO_ENV) or CPUINFO)
    model: str | None = None
    flags: frozenset[str] | None = None
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    x86 = platform.machine().lower() in {"x86_64", "amd64", "i686", "i386"}
    return CpuFeatures(
        model=model or platform.processor() or platform.machine(),
        flags=flags or frozenset(),
        x86=x86,
    )


def fp8_kv_cache_refusal(features: CpuFeatures) -> str | None:
    """Why vLLM's CPU build cannot run an fp8 KV cache on this CPU, in vLLM's own words; None
    when it can."""
    if features.fp8_kv_cache:
        return None
    return (
        "FP8 KV cache on CPU requires x86 with AVX-512 or AMX "
        f"(vLLM's words); this CPU ({features.model}) has neither: use kv_cache_dtype auto "
        "or a GPU"
    )
