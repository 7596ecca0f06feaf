"""Validate the NVML measurement layer on a real GPU; writes validation.json.

    PYTHONPATH=src python docs/validation/validate_gpu.py --out DIR [--quick]

A. A steady bf16 matmul load (~8 s, fixed work), measured five times by the tool's own parts
   (synced energy counter), and at the same time by an independent monitor thread sampling
   instant and average power at the highest rate it can (>=100 Hz): energy vs >=100 Hz
   instant-power integration, vs 1 Hz and 10 Hz average-power integration, vs naive
   (unsynced) counter reads; repeatability (CV); edge uncertainty; sampler overhead.
B. Real PyTorch-backend experiments through the real CLI (`lem campaign`, local runner) on a
   random-weight ~1B-parameter Llama built from a config (no downloads), sampler at 0 and
   10 Hz interleaved over cycles: throughput overhead of the sampler, the tool's energy vs the
   monitor's integration over each result's window, repeatability, idle baseline.
Never changes clocks, power limits or persistence mode: the card is measured as found.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pynvml
import torch

from llenergymeasure.measure.baseline import measure_baseline
from llenergymeasure.measure.energy import integrate_power, read_synced, window_energy
from llenergymeasure.measure.nvml import NvmlGpu, visible_gpu_uuids
from llenergymeasure.measure.sampler import Sampler

TOOLS = Path(__file__).resolve().parents[2] / "tools"


class Monitor:
    """Independent power log: instant and average power fields, as fast as NVML answers."""

    def __init__(self, handle: Any, period_s: float = 0.006) -> None:
        self.handle, self.period_s = handle, period_s
        self.instant: list[tuple[float, float]] = []
        self.average: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        fields = [pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_FI_DEV_POWER_AVERAGE]
        while not self._stop.is_set():
            values = pynvml.nvmlDeviceGetFieldValues(self.handle, fields)
            t = time.monotonic()
            if values[0].nvmlReturn == 0:
                self.instant.append((t, values[0].value.uiVal / 1000.0))
            if values[1].nvmlReturn == 0:
                self.average.append((t, values[1].value.uiVal / 1000.0))
            time.sleep(self.period_s)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def rate_hz(self, series: list[tuple[float, float]]) -> float:
        return (len(series) - 1) / (series[-1][0] - series[0][0]) if len(series) > 1 else 0.0


def every(series: list[tuple[float, float]], period_s: float) -> list[tuple[float, float]]:
    """What a sampler at 1/period_s would have seen: the first reading of each period."""
    out: list[tuple[float, float]] = []
    for t, p in series:
        if not out or t - out[-1][0] >= period_s:
            out.append((t, p))
    return out


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def matmul_load(n_iter: int, a: torch.Tensor, b: torch.Tensor) -> None:
    for _ in range(n_iter):
        torch.matmul(a, b)
    torch.cuda.synchronize()


def part_a(gpu: NvmlGpu, handle: Any, reps: int, target_s: float) -> dict[str, Any]:
    size = 8192
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    matmul_load(20, a, b)
    t0 = time.perf_counter()
    matmul_load(200, a, b)
    per_iter = (time.perf_counter() - t0) / 200
    n_iter = int(target_s / per_iter)
    print(f"A: {per_iter * 1e3:.2f} ms per matmul, {n_iter} iterations per run", flush=True)

    time.sleep(3)  # let the card settle before the idle baseline
    baseline = measure_baseline([gpu], 5.0)[gpu.uuid]
    print(f"A: idle baseline {baseline.power_w:.1f} W ({baseline.method})", flush=True)

    runs = []
    for rep in range(reps):
        time.sleep(5)  # cool-down between runs (~5 s removes most back-to-back bias)
        with Monitor(handle) as mon:
            time.sleep(0.5)
            start = read_synced([gpu])[gpu.uuid]
            naive0 = (time.monotonic(), gpu.energy_mj())
            w0 = time.monotonic()
            matmul_load(n_iter, a, b)
            w1 = time.monotonic()
            naive1 = (time.monotonic(), gpu.energy_mj())
            end = read_synced([gpu], log_power=True)[gpu.uuid]
            time.sleep(0.5)
        counter_j = (end.energy_mj - start.energy_mj) / 1000.0
        tool = window_energy(gpu.uuid, start, end, w0, w1, [], [], [])
        tool_j = tool.energy_j or 0.0
        inst_j = integrate_power(mon.instant, start.t_s, end.t_s)
        avg10_j = integrate_power(every(mon.average, 0.1), start.t_s, end.t_s)
        avg1_j = integrate_power(every(mon.average, 1.0), start.t_s, end.t_s)
        naive_j = ((naive1[1] or 0) - (naive0[1] or 0)) / 1000.0
        inst_workload_j = integrate_power(mon.instant, w0, w1)
        mean_w = tool_j / tool.window_s
        run = {
            "rep": rep + 1,
            "tool_energy_j": tool_j,
            "tool_window_s": tool.window_s,
            "counter_to_end_tick_j": counter_j,
            "counter_to_end_tick_s": end.t_s - start.t_s,
            "instant_over_tool_window_j": integrate_power(mon.instant, start.t_s, w1),
            "workload_s": w1 - w0,
            "edge_synced": start.synced and end.synced,
            "edge_uncertainty_s": start.gap_s + end.gap_s,
            "edge_uncertainty_j": (start.gap_s + end.gap_s) * mean_w,
            "instant_integration_j": inst_j,
            "instant_rate_hz": mon.rate_hz(mon.instant),
            "average_10hz_integration_j": avg10_j,
            "average_1hz_integration_j": avg1_j,
            "naive_counter_j": naive_j,
            "naive_counter_window_s": naive1[0] - naive0[0],
            "instant_over_workload_only_j": inst_workload_j,
            "mean_power_w": mean_w,
        }
        runs.append(run)
        print(
            "A rep {rep}: tool {tool_energy_j:.1f} J over {tool_window_s:.3f} s, instant "
            "{instant_integration_j:.1f} J @ {instant_rate_hz:.0f} Hz, avg 1 Hz "
            "{average_1hz_integration_j:.1f} J, edge ±{edge_uncertainty_j:.2f} J".format(**run),
            flush=True,
        )

    # Sampler overhead on a fixed amount of work: alternate off / 10 Hz, 3 pairs.
    overhead = {"off_s": [], "sampler_10hz_s": []}
    n_short = max(1, n_iter // 2)
    for _ in range(3):
        time.sleep(2)
        t = time.perf_counter()
        matmul_load(n_short, a, b)
        overhead["off_s"].append(time.perf_counter() - t)
        time.sleep(2)
        with Sampler([gpu], 10.0):
            t = time.perf_counter()
            matmul_load(n_short, a, b)
            overhead["sampler_10hz_s"].append(time.perf_counter() - t)
    energies = [r["tool_energy_j"] for r in runs]
    return {
        "matmul_size": size,
        "ms_per_matmul": per_iter * 1e3,
        "iterations_per_run": n_iter,
        "baseline_power_w": baseline.power_w,
        "baseline_method": baseline.method,
        "runs": runs,
        "tool_energy_cv": cv(energies),
        "sampler_overhead": overhead,
        "sampler_overhead_pct": 100
        * (
            statistics.median(overhead["sampler_10hz_s"]) / statistics.median(overhead["off_s"]) - 1
        ),
    }


def part_b(handle: Any, out: Path, work: Path, cycles: int) -> dict[str, Any]:
    # Build the model in a child process: this process must hold no CUDA context, or the
    # worker's pre-flight rightly reports another process on the GPU.
    model_dir = Path("/tmp/lem-llama-1b")
    made = subprocess.run(
        [sys.executable, __file__, "--out", str(out), "--make-model", str(model_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    n_params = int(made.stdout.strip().splitlines()[-1])
    print(
        f"B: random-weight Llama with {n_params / 1e9:.2f} B parameters at {model_dir}", flush=True
    )
    campaign = work / "gpu-validation.yaml"
    campaign.write_text(
        f"""name: gpu-validation
cycles: {cycles}
base:
  model: {model_dir}
  precision: bf16
  prompts: {{source: synthetic, input_tokens: 64}}
  n_prompts: 128
  batch_size: 32
  max_input_tokens: 128
  max_output_tokens: 128
  warmup: {{runs: 2}}
grid:
  measurement.sampler_hz: [0, 10]
""",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with Monitor(handle) as mon:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "llenergymeasure.cli",
                "campaign",
                str(campaign),
                "-o",
                str(work / "campaigns"),
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    print(proc.stdout[-3000:], proc.stderr[-3000:], flush=True)
    summary = json.loads(proc.stdout[proc.stdout.index("{") :]) if "{" in proc.stdout else {}
    campaign_dir = Path(summary.get("campaign_dir", ""))
    # Monitor timestamps are monotonic; results carry wall-clock window edges.
    offset = time.time() - time.monotonic()
    rows = []
    for result_path in sorted(campaign_dir.glob("*/cycle-*/result.json")):
        r = json.loads(result_path.read_text())
        r |= r.get("offline") or {}  # schema 2: the offline figures are their own section
        e = r["energy"]
        start = r["window_start_unix_s"] - offset
        window_s = e["energy_window_s"] or (r["window_end_unix_s"] - r["window_start_unix_s"])
        monitor_j = integrate_power(mon.instant, start, start + window_s)
        rows.append(
            {
                "experiment_id": r["experiment_id"],
                "cycle": r["cycle"],
                "sampler_hz": r["config"]["measurement"]["sampler_hz"],
                "tokens_per_s": r["output_tokens_per_s"],
                "measured_duration_s": r["measured_duration_s"],
                "energy_method": e["energy_method"],
                "energy_raw_j": e["energy_raw_j"],
                "energy_window_s": e["energy_window_s"],
                "monitor_instant_j": monitor_j,
                "baseline_power_w": e["baseline_power_w"],
                "baseline_source": e["baseline_source"],
                "energy_adjusted_j": e["energy_adjusted_j"],
                "energy_raw_per_output_token_j": e["energy_raw_per_output_token_j"],
                "energy_adjusted_per_output_token_j": e["energy_adjusted_per_output_token_j"],
                "edge_uncertainty_s": e["per_gpu"][0]["edge_uncertainty_s"]
                if e["per_gpu"]
                else None,
                "flags": r["flags"],
                "achieved_tflops": r["achieved_tflops"],
                "peak_memory_mb": r["peak_memory_mb"],
                "warnings": r["measurement_warnings"],
                "timeseries_file": r["timeseries_file"],
            }
        )
    samples = sorted(campaign_dir.glob("*/cycle-1/timeseries.parquet"))
    if samples:
        (out / "timeseries-example.parquet").write_bytes(samples[-1].read_bytes())
        (out / "result-example.json").write_bytes((samples[-1].parent / "result.json").read_bytes())
    by_hz: dict[float, list[dict[str, Any]]] = {}
    for row in rows:
        by_hz.setdefault(row["sampler_hz"], []).append(row)
    tput = {hz: statistics.median(x["tokens_per_s"] for x in v) for hz, v in by_hz.items()}
    return {
        "model_parameters": n_params,
        "cli_returncode": proc.returncode,
        "campaign_dir": str(campaign_dir),
        "rows": rows,
        "median_tokens_per_s": tput,
        "sampler_10hz_throughput_loss_pct": (
            100 * (1 - tput[10.0] / tput[0.0]) if 0.0 in tput and 10.0 in tput else None
        ),
        "energy_per_token_cv_by_hz": {
            hz: cv([x["energy_raw_per_output_token_j"] for x in v]) for hz, v in by_hz.items()
        },
        "environment": json.loads(next(campaign_dir.glob("*/cycle-1/result.json")).read_text())[
            "environment"
        ]
        if rows
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True, help="validation.json goes here")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lem-validation"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    parser.add_argument("--parts", default="AB", help="which parts to run: A, B or AB")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    pynvml.nvmlInit()
    if "A" in args.parts:
        uuid = str(torch.cuda.get_device_properties(0).uuid)
        uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    else:
        uuid = visible_gpu_uuids(pynvml)[0]
    gpu = NvmlGpu(pynvml, uuid)
    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    report: dict[str, Any] = {
        "gpu": pynvml.nvmlDeviceGetName(handle),
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "torch": torch.__version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if "A" in args.parts:
        report["steady_load"] = part_a(gpu, handle, reps=2 if args.quick else 5, target_s=8.0)
        (args.out / "validation.json").write_text(json.dumps(report, indent=1, default=str))
        a = report["steady_load"]
        print(json.dumps({k: a[k] for k in ("tool_energy_cv", "sampler_overhead_pct")}))
    if "B" in args.parts:
        b = part_b(handle, args.out, args.work, cycles=1 if args.quick else 4)
        report["pytorch_backend"] = b
        (args.out / "validation.json").write_text(json.dumps(report, indent=1, default=str))
        keys = (
            "median_tokens_per_s",
            "sampler_10hz_throughput_loss_pct",
            "energy_per_token_cv_by_hz",
        )
        print(json.dumps({k: b[k] for k in keys}))


if __name__ == "__main__":
    main()
