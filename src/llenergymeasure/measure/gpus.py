"""The GPUs NVML sees, as a command `lem doctor` runs in a subprocess (the host CLI never loads
NVML itself):

    python -m llenergymeasure.measure.gpus   ->   {"driver_version": "580.65", "gpus": [...]}

Exit code 3 and {"error": ...} when NVML cannot be used (no driver, no GPU).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pynvml

from llenergymeasure.measure.nvml import _text

EXIT_UNAVAILABLE = 3


def describe_gpus() -> dict[str, Any]:
    """Driver version and, per GPU in NVML order: index, name, memory, persistence, MIG."""
    pynvml.nvmlInit()
    try:
        gpus = []
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)

            def get(name: str, handle: Any = handle) -> Any:
                try:
                    return getattr(pynvml, name)(handle)
                except pynvml.NVMLError:
                    return None

            memory = get("nvmlDeviceGetMemoryInfo")
            persistence = get("nvmlDeviceGetPersistenceMode")
            mig = get("nvmlDeviceGetMigMode")
            gpus.append(
                {
                    "index": index,
                    "name": _text(get("nvmlDeviceGetName") or "unknown"),
                    "memory_total_mb": memory.total / 2**20 if memory is not None else None,
                    "persistence_mode": bool(persistence) if persistence is not None else None,
                    "mig_enabled": bool(mig[0]) if mig is not None else None,
                }
            )
        return {"driver_version": _text(pynvml.nvmlSystemGetDriverVersion()), "gpus": gpus}
    finally:
        pynvml.nvmlShutdown()


def main() -> int:
    try:
        print(json.dumps(describe_gpus()))
    except pynvml.NVMLError as e:
        print(json.dumps({"error": f"NVML: {e}"}))
        return EXIT_UNAVAILABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
