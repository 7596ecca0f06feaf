"""GPU temperature through NVML, as a command the host runs in a subprocess.

    python -m llenergymeasure.measure.temperature 0 2   ->   {"temperatures_c": {"0": 41, "2": 44}}

The orchestrator waits for a thermal floor before starting an experiment but never imports NVML
itself; this is the one small thing it asks a separate process. Exit code 3 and
{"error": ...} when NVML cannot be used (no driver, no GPU, a bad index).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import pynvml

EXIT_UNAVAILABLE = 3


def read_temperatures_c(indices: Sequence[int]) -> dict[int, float]:
    """Core temperature per GPU index (NVML order, as nvidia-smi numbers them)."""
    pynvml.nvmlInit()
    try:
        return {
            i: float(
                pynvml.nvmlDeviceGetTemperature(
                    pynvml.nvmlDeviceGetHandleByIndex(i), pynvml.NVML_TEMPERATURE_GPU
                )
            )
            for i in indices
        }
    finally:
        pynvml.nvmlShutdown()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not all(a.isdigit() for a in args):
        print("usage: python -m llenergymeasure.measure.temperature GPU_INDEX...", file=sys.stderr)
        return 2
    try:
        readings = read_temperatures_c([int(a) for a in args])
    except pynvml.NVMLError as e:
        print(json.dumps({"error": f"NVML: {e}"}))
        return EXIT_UNAVAILABLE
    print(json.dumps({"temperatures_c": {str(i): t for i, t in readings.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
