"""Host noise over the window: time the hypervisor took from this machine's CPUs ("steal",
/proc/stat) and the CPU time this worker process spent.

A decode loop that launches thousands of small kernels per token runs at the host CPU's pace,
so a virtual machine whose CPUs are given to other guests serves the same batch slower. Both
figures go into the quality record; neither is corrected for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

PROC_STAT = Path("/proc/stat")
STEAL_FIELD = 8  # cpu user nice system idle iowait irq softirq steal ...


class HostUsage(NamedTuple):
    steal_s: float | None
    process_cpu_s: float
    """User + system CPU time of this process, all its threads."""


def steal_s(path: Path = PROC_STAT) -> float | None:
    """Steal time summed over all CPUs since boot, in seconds; None where not reported."""
    try:
        first = path.read_text().splitlines()[0].split()
        ticks = int(first[STEAL_FIELD])
    except (OSError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK") if first[0] == "cpu" else None


def host_usage() -> HostUsage:
    return HostUsage(steal_s(), time.process_time())


def usage_between(start: HostUsage | None, end: HostUsage | None) -> HostUsage | None:
    """What was used from `start` to `end`; steal None unless both edges read it."""
    if start is None or end is None:
        return None
    stolen = None if start.steal_s is None or end.steal_s is None else end.steal_s - start.steal_s
    return HostUsage(stolen, end.process_cpu_s - start.process_cpu_s)
