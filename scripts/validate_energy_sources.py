"""Agreement of the three energy sources (issue 17.4) over one window of one steady GPU load.

    PYTHONPATH=src python scripts/validate_energy_sources.py [--seconds 10] [--out FILE]

One bf16 matmul loop runs on GPU 0 for --seconds. NVML's counter is read at synced edges as
the worker does (read_synced, tail removed via instant power), Zeus's window and CodeCarbon's
task are opened after the start edge and closed before the end edge, all inside one window,
so the three read the same joules. Prints each source's J, its ratio to NVML and its version;
--out writes the same as JSON (for docs/validation). A source whose extra is missing is
reported as such, never as 0. Needs an NVIDIA GPU and torch; run once per driver/GPU type.

CodeCarbon measures power every measure_power_secs (15 s by default) but reads NVML's energy
counter at stop_task, so a window shorter than 15 s is still one counter delta; the script
records the interval it ran with.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def steady_load(seconds: float) -> int:
    """bf16 4096^3 matmuls until `seconds` have passed, synchronised; returns the count."""
    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        count += 20
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from llenergymeasure.errors import MeasurementError

    try:
        return measure(args)
    except MeasurementError as e:
        print(f"cannot validate here: {e}")
        return 2


def measure(args: argparse.Namespace) -> int:
    import torch

    from llenergymeasure.errors import ConfigError
    from llenergymeasure.measure.energy import read_synced, window_energy
    from llenergymeasure.measure.nvml import NvmlGpu, nvml_session, visible_gpu_uuids
    from llenergymeasure.measure.sources import SOURCES, EnergySource

    rows: dict[str, dict[str, Any]] = {}
    with nvml_session() as pynvml:
        uuid = visible_gpu_uuids(pynvml)[0]
        gpu = NvmlGpu(pynvml, uuid)
        sources: list[EnergySource] = []
        for name, cls in SOURCES.items():
            try:
                sources.append(cls([0]))
            except ConfigError as e:
                rows[name] = {"energy_j": None, "error": str(e)}
        steady_load(args.warmup_seconds)  # clocks and temperature settle first
        torch.cuda.synchronize()
        start = read_synced([gpu])
        for source in sources:
            source.start()
        t0 = time.monotonic()
        matmuls = steady_load(args.seconds)
        t1 = time.monotonic()
        readings = {s.name: (s.stop_j(), s.version) for s in reversed(sources)}
        end = read_synced([gpu], log_power=True)
        warnings: list[str] = []
        nvml = window_energy(uuid, start.get(uuid), end.get(uuid), t0, t1, [], [], warnings)
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpu_name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByUUID(uuid))
    rows["nvml"] = {
        "energy_j": nvml.energy_j,
        "version": f"driver {driver}",
        "method": nvml.method,
        "window_s": nvml.window_s,
        "warnings": warnings,
    }
    for name, (energy_j, version) in readings.items():
        rows[name] = {"energy_j": energy_j, "version": version}
    reference = rows["nvml"]["energy_j"]
    for row in rows.values():
        energy = row.get("energy_j")
        row["ratio_to_nvml"] = energy / reference if energy is not None and reference else None
    report = {
        "gpu": str(gpu_name),
        "window_s": t1 - t0,
        "matmuls": matmuls,
        "mean_power_w": reference / (t1 - t0) if reference else None,
        "sources": rows,
    }
    print(f"{report['gpu']}: {report['window_s']:.2f} s window, {matmuls} matmuls")
    for name, row in rows.items():
        energy, ratio = row.get("energy_j"), row.get("ratio_to_nvml")
        shown = f"{energy:10.1f} J  x{ratio:.4f} of nvml" if energy is not None else "      n/a"
        print(f"  {name:11s} {shown}  {row.get('version') or row.get('error', '')}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
