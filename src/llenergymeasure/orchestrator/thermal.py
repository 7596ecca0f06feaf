"""Reading GPU temperatures for the thermal floor, through `llenergymeasure.measure.temperature`
in a subprocess: the orchestrator never loads NVML itself, and the reading comes from the host,
before the experiment's worker (or container) exists to warm the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

from llenergymeasure.errors import MeasurementError

TemperatureProbe = Callable[[tuple[int, ...]], dict[int, float]]
"""GPU indices -> temperature in °C per index; raises MeasurementError when it cannot read."""

PROBE_TIMEOUT_S = 30.0


def read_gpu_temperatures(gpus: tuple[int, ...]) -> dict[int, float]:
    """The default TemperatureProbe."""
    cmd = [sys.executable, "-m", "llenergymeasure.measure.temperature", *map(str, gpus)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MeasurementError(f"GPU temperature probe did not run: {e}") from e
    try:
        data = json.loads(proc.stdout)
        if "error" in data:
            raise MeasurementError(str(data["error"]))
        return {int(k): float(v) for k, v in data["temperatures_c"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        tail = (proc.stderr or proc.stdout).strip()[-300:]
        raise MeasurementError(
            f"GPU temperature probe failed (exit {proc.returncode}): {tail}"
        ) from e


def unpinned_gpus() -> tuple[int, ...]:
    """The GPUs an unpinned worker uses: CUDA_VISIBLE_DEVICES when it lists indices, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if visible and all(v.strip().isdigit() for v in visible):
        return tuple(int(v) for v in visible)
    return (0,)
