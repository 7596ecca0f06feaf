"""Time the hypervisor took from this machine's CPUs ("steal", /proc/stat), for the window.

A decode loop that launches thousands of small kernels per token runs at the host CPU's pace,
so a virtual machine whose CPUs are given to other guests serves the same batch slower. The
worker records the steal over its window as a measurement-quality fact; it is not corrected.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC_STAT = Path("/proc/stat")
STEAL_FIELD = 8  # cpu user nice system idle iowait irq softirq steal ...


def steal_s(path: Path = PROC_STAT) -> float | None:
    """Steal time summed over all CPUs since boot, in seconds; None where not reported."""
    try:
        first = path.read_text().splitlines()[0].split()
        ticks = int(first[STEAL_FIELD])
    except (OSError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK") if first[0] == "cpu" else None
