"""GPU benchmark: where a campaign's wall time goes, and whether the window pays warm-up.

    PYTHONPATH=src python benchmarks/gpu_phases.py --out DIR [--peer-site DIR] [--steps ...]

On a random-weight 852M Llama (bf16, tools/make_random_llama.py), built-in prompts, 64
prompts, 128/128 tokens (ignore_eos), batch 32, 3 warm-up runs, local runner, gaps 2 s:
  before: warmup.cover first_batch (the old warm-up), LEM_FORK_SERVER=0 (the old spawn),
          sampler 0 and 10 Hz, 2 cycles;
  after:  the defaults (warm-up over every batch shape, fork server), sampler 0 and 10 Hz,
          3 cycles;
  profile: in one process, torch.profiler over the first and second generate at batch 32,
          with and without Backend.initialize() first;
  hostprobe: in one process, batches back to back and after 0.5 s idle gaps, each with the
          serving thread's CPU time, steal, the SM clock while it ran and the host CPU's speed;
  graphs: 'after' with `pytorch: {decode: cuda_graphs}` (decode as CUDA graph replays, not
          host-bound), sampler 0 and 10 Hz, --cycles cycles;
  peer:   the seeds' release `llenergymeasure==0.7.0` (installed into --peer-site), `llem run
          study.yaml` on the same model, prompts, lengths, batch and cycles (NVML sampler named,
          its 30 s thermal floor; --peer-baseline-s shortens its 30 s idle baseline to fit a call).
--n-prompts sets the workload's prompt count (64 by default; 32 is one batch of 32).
For each campaign: wall time, per run the phases (result.json phases_s) and the time outside
the window, the measured share of the wall time, throughput CV across cycles, and the
window / last warm-up batch latency ratio. Writes DIR/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS, BATCH, TOKENS = 64, 32, 128
CYCLES, HZ = 3, "[0, 10]"
GRAPHS = "  pytorch: {decode: cuda_graphs}\n"
"""The 'graphs' arm (issue 30): a static KV cache whose decode step generate compiles with
CUDA graphs (CompileConfig's reduce-overhead), so a step is one graph replay and the batch
time stops following the host CPU's pace."""

CAMPAIGN = """\
name: {name}
runner: local
cycles: {cycles}
order: interleaved
gaps: {{between_experiments_s: 2, between_cycles_s: 2}}
base:
  model: {model}
  backend: pytorch
  precision: bf16
  prompts: {{source: builtin}}
  n_prompts: {n}
  batch_size: {batch}
  max_input_tokens: {tokens}
  max_output_tokens: {tokens}
  decoding: {{ignore_eos: true}}
  warmup: {warmup}
{engine}grid:
  measurement.sampler_hz: {hz}
"""


def campaign(
    name: str,
    out: Path,
    model: Path,
    cycles: int,
    warmup: str,
    env: dict[str, str],
    engine: str = "",
    deadline: float = float("inf"),
) -> dict[str, Any]:
    path = out / f"{name}.yaml"
    text = CAMPAIGN.format(
        name=name,
        cycles=cycles,
        hz=HZ,
        model=model,
        n=N_PROMPTS,
        batch=BATCH,
        tokens=TOKENS,
        warmup=warmup,
        engine=engine,
    )
    path.write_text(text)
    t0 = time.monotonic()
    try:  # cut at the call's budget: the runs finished by then are still read below
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "llenergymeasure.cli",
                "campaign",
                str(path),
                "-o",
                str(out / name),
            ],
            env=os.environ | env,
            text=True,
            capture_output=True,
            check=False,
            timeout=max(30.0, deadline - t0),
        )
        returncode, tail = proc.returncode, proc.stdout[-3000:] + proc.stderr[-3000:]
    except subprocess.TimeoutExpired as e:
        returncode, tail = None, f"cut at the budget: {str(e.stdout or '')[-3000:]}"
    wall_s = time.monotonic() - t0
    print(tail, flush=True)
    runs = []
    for result_path in sorted((out / name).glob("*/*/cycle-*/result.json")):
        r = json.loads(result_path.read_text())
        r |= r.get("offline") or {}  # schema 2: the offline figures are their own section
        phases = r.get("phases_s") or {}
        wall_run = (
            _ts(r["finished_at"]) - _ts(r["started_at"]) + (phases.get("worker_start_s") or 0.0)
        )
        runs.append(
            {
                "sampler_hz": r["config"]["measurement"]["sampler_hz"],
                "cycle": r["cycle"],
                "worker_start": r.get("worker_start"),
                "phases_s": phases,
                "run_wall_s": wall_run,
                "outside_window_s": wall_run - r["measured_duration_s"],
                "outside_window_and_warmup_s": wall_run - r["measured_duration_s"] - r["warmup_s"],
                "output_tokens_per_s": r["output_tokens_per_s"],
                "energy_raw_per_output_token_j": r["energy"]["energy_raw_per_output_token_j"],
                "energy_adjusted_per_output_token_j": r["energy"][
                    "energy_adjusted_per_output_token_j"
                ],
                "window_to_warmup_latency_ratio": (r.get("quality") or {}).get(
                    "window_to_warmup_latency_ratio", r.get("window_to_warmup_latency_ratio")
                ),
                "ratio_vs_last_pass": _ratio_vs_last_pass(r),
                "passes": r.get("passes"),
                "measured_duration_s": r["measured_duration_s"],
                "reference_runs": r["warmup"].get("reference_runs"),
                "window_batch_host_cpu_s": r.get("window_batch_host_cpu_s"),
                "warmup_last_pass_host_cpu_s": r["warmup"].get("last_run_batch_host_cpu_s"),
                "window_host_steal_s": r.get("window_host_steal_s"),
                "quality_host": {
                    k: (r.get("quality") or {}).get(k)
                    for k in ("host_steal_s", "host_cpu_s", "gpu_busy_share", "host_bound")
                },
                "quality_status": (r.get("quality") or {}).get("status"),
                "decode_ran": (r.get("engine_settings") or {}).get("decode"),
                "window_batch_latencies_s": r.get("window_batch_latencies_s"),
                "warmup_last_pass_s": r["warmup"].get("last_run_batch_latencies_s"),
                "warmup_latencies_s": r["warmup"]["latencies_s"],
                "window_shapes": r.get("window_batch_shapes"),
                "warmup_shapes": r["warmup"].get("batch_shapes"),
                "warnings": r["measurement_warnings"],
            }
        )
    window_total = sum(r["phases_s"].get("window_s", 0.0) for r in runs)
    by_hz: dict[str, Any] = {}
    for hz in sorted({r["sampler_hz"] for r in runs}):
        tps = [r["output_tokens_per_s"] for r in runs if r["sampler_hz"] == hz]
        ratios = [r["window_to_warmup_latency_ratio"] for r in runs if r["sampler_hz"] == hz]
        adj = [r["energy_adjusted_per_output_token_j"] for r in runs if r["sampler_hz"] == hz]
        by_hz[str(hz)] = {
            "tokens_per_s": tps,
            "cv": _cv(tps),
            "adjusted_j_per_token": adj,
            "adjusted_cv": _cv([a for a in adj if a is not None]),
            "ratios": ratios,
        }
    ratios = [r["window_to_warmup_latency_ratio"] for r in runs]
    summary = {
        "returncode": returncode,
        "ratios_within_5pct": sum(1 for x in ratios if x is not None and abs(x - 1) <= 0.05),
        "n_runs": len(runs),
        "max_outside_window_and_warmup_s": max(
            (r["outside_window_and_warmup_s"] for r in runs), default=None
        ),
        "campaign_wall_s": wall_s,
        "measured_share": window_total / wall_s,
        "median_outside_window_s": statistics.median(r["outside_window_s"] for r in runs)
        if runs
        else None,
        "median_outside_window_and_warmup_s": statistics.median(
            r["outside_window_and_warmup_s"] for r in runs
        )
        if runs
        else None,
        "by_sampler_hz": by_hz,
        "runs": runs,
    }
    print(name, json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1), flush=True)
    return summary


def _cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else None


def _ratio_vs_last_pass(r: dict[str, Any]) -> float | None:
    """The ratio as main defined it before: window batches over the last pass's, by shape."""
    last = r["warmup"].get("last_run_batch_latencies_s") or []
    shapes = [tuple(s) for s in r["warmup"].get("batch_shapes") or []]
    window = r.get("window_batch_latencies_s") or []
    if not last or not window:
        return None
    by_shape = dict(zip(shapes, last, strict=True))
    shapes_run = [tuple(s) for s in r["window_batch_shapes"]] * (r.get("passes") or 1)
    ref = sum(by_shape.get(s, statistics.fmean(last)) for s in shapes_run)
    return sum(window) / ref


def hostprobe(model: Path, deadline: float) -> dict[str, Any]:
    """In one process, after a first pass over both shapes: batches back to back, then after
    idle gaps of 0.5 s (the gap before a window opens). Per batch: wall time, the serving
    thread's CPU time, /proc/stat steal, the SM clock sampled at 20 Hz while it ran, and a fixed
    pure-Python loop timed just before it (the host CPU's speed at that moment)."""
    import threading

    import pynvml
    import torch

    from llenergymeasure.backends.pytorch import PyTorchBackend
    from llenergymeasure.config.experiment import ExperimentConfig
    from llenergymeasure.datasets import builtin_prompts
    from llenergymeasure.measure.hoststat import steal_s

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    clocks: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            mhz = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
            clocks.append((time.perf_counter(), mhz))

    def cpu_loop_ms() -> float:
        t0 = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i & 7
        return (time.perf_counter() - t0) * 1e3

    config = ExperimentConfig.model_validate(
        {
            "model": str(model),
            "precision": "bf16",
            "n_prompts": N_PROMPTS,
            "batch_size": BATCH,
            "max_input_tokens": TOKENS,
            "max_output_tokens": TOKENS,
            "decoding": {"ignore_eos": True},
        }
    )
    rows: list[dict[str, Any]] = []
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with PyTorchBackend(config) as backend:
        backend.initialize()
        batches = backend.prepare(builtin_prompts()[:N_PROMPTS])
        backend.serve(batches)  # first pass: every shape's first-time costs
        gc_collect_s = _timed_gc()
        plan = [("steady", 0.0)] * 6 + [("after_gap", 0.5), ("steady", 0.0)] * 3
        for i, (arm, gap_s) in enumerate(plan):
            if time.monotonic() > deadline:
                break
            time.sleep(gap_s)
            loop_ms = cpu_loop_ms()
            batch = batches[i % len(batches)]
            st0, c0, t0 = steal_s(), time.thread_time(), time.perf_counter()
            backend.run_batch(batch)
            t1 = time.perf_counter()
            st1 = steal_s()
            during = [mhz for t, mhz in clocks if t0 <= t <= t1]
            rows.append(
                {
                    "arm": arm,
                    "shape": list(batch.shape),
                    "wall_s": t1 - t0,
                    "thread_cpu_s": time.thread_time() - c0,
                    "steal_s": st1 - st0 if st0 is not None and st1 is not None else None,
                    "cpu_loop_ms": loop_ms,
                    "sm_mhz_mean": statistics.fmean(during) if during else None,
                    "sm_mhz_min": min(during) if during else None,
                    "sm_mhz_first": during[:6],
                }
            )
            print("hostprobe", json.dumps(rows[-1]), flush=True)
    stop.set()
    torch.cuda.empty_cache()
    report: dict[str, Any] = {"rows": rows, "gc_collect_s": gc_collect_s}
    print("hostprobe gc.collect s", gc_collect_s, flush=True)
    return report


def _timed_gc() -> float:
    import gc

    t0 = time.perf_counter()
    gc.collect()
    return time.perf_counter() - t0


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def profile(model: Path, out: Path) -> dict[str, Any]:
    """First vs second generate at batch 32, profiled; and the first real batch after
    Backend.initialize() (what the load phase now pays)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    from llenergymeasure.backends.pytorch import PyTorchBackend
    from llenergymeasure.config.experiment import ExperimentConfig
    from llenergymeasure.datasets import builtin_prompts

    config = ExperimentConfig.model_validate(
        {
            "model": str(model),
            "precision": "bf16",
            "batch_size": BATCH,
            "max_input_tokens": TOKENS,
            "max_output_tokens": TOKENS,
            "decoding": {"ignore_eos": True},
        }
    )
    prompts = builtin_prompts()[:N_PROMPTS]
    report: dict[str, Any] = {}
    for label, init in (("no_init", False), ("with_init", True)):
        with PyTorchBackend(config) as backend:
            t0 = time.perf_counter()
            if init:
                backend.initialize()
            report[f"{label}_initialize_s"] = time.perf_counter() - t0
            batches = backend.prepare(prompts)
            times = []
            for i, batch in enumerate([batches[0], batches[0], batches[1], batches[1]]):
                if label == "no_init" and i < 2:
                    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
                    with tprofile(activities=activities) as prof:
                        t0 = time.perf_counter()
                        backend.run_batch(batch)
                        times.append(time.perf_counter() - t0)
                    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
                    (out / f"profile_call{i + 1}.txt").write_text(table)
                    print(f"--- generate call {i + 1} ({times[-1]:.2f} s) ---\n{table}", flush=True)
                else:
                    t0 = time.perf_counter()
                    backend.run_batch(batch)
                    times.append(time.perf_counter() - t0)
            report[f"{label}_batch_s"] = times
            report["shapes"] = [list(b.shape) for b in batches]
        torch.cuda.empty_cache()
    print("profile", json.dumps(report, indent=1), flush=True)
    return report


def peer(
    model: Path, out: Path, site: Path, deadline: float, baseline_s: float, cycles: int
) -> dict[str, Any]:
    """The seeds' 0.7.0 release on the same workload (its own package, its own site dir)."""
    from llenergymeasure.datasets import builtin_prompts

    prompts = out / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in builtin_prompts()[:N_PROMPTS])
    )
    study = out / "study.yaml"
    study.write_text(
        f"""study_name: peer
runners: {{transformers: process}}
study_execution: {{n_cycles: {cycles}, experiment_gap_seconds: 2, cycle_gap_seconds: 2}}
experiments:
  - task:
      model: {model}
      dataset: {{source: {prompts}, n_prompts: {N_PROMPTS}}}
      max_input_tokens: {TOKENS}
      max_output_tokens: {TOKENS}
    engine: transformers
    serving_mode: offline
    offline: {{warmup: {{thermal_floor_seconds: 30}}}}
    measurement: {{energy_sampler: nvml, baseline: {{duration_seconds: {baseline_s}}}}}
    transformers:
      engine_params: {{dtype: bfloat16}}
      sampling_params: {{min_new_tokens: {TOKENS}, max_new_tokens: {TOKENS}}}
      llem_execution: {{batch_size: {BATCH}}}
"""
    )
    # Its own package first; the carried pydantic etc. after it; never this checkout's src.
    deps = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p and not p.endswith("src")]
    env = os.environ | {"PYTHONPATH": ":".join([str(site), *deps])}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                str(site / "bin" / "llem"),
                "run",
                str(study),
                "-o",
                str(out / "peer"),
            ],
            env=env,
            text=True,
            capture_output=True,
            check=False,
            cwd=out,
            timeout=max(30.0, deadline - time.monotonic()),
        )
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout, stderr, code = str(e.stdout or "")[-6000:], str(e.stderr or ""), None
    wall_s = time.monotonic() - t0
    print(stdout[-6000:], stderr[-4000:], flush=True)
    return _peer_results(out, code, wall_s)


def _peer_results(out: Path, code: int | None, wall_s: float) -> dict[str, Any]:
    files = sorted(str(p.relative_to(out)) for p in (out / "peer").rglob("*.json"))
    print("peer files", files[:40], flush=True)
    results = []
    for path in (out / "peer").rglob("*.json"):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(data, dict) and any("token" in k for k in data):
            results.append({"file": str(path.relative_to(out)), "data": _flat_numbers(data)})
    return {"returncode": code, "wall_s": wall_s, "results": results}


def _flat_numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a nested result, by dotted key (the peer's schema is its own)."""
    flat: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            flat |= _flat_numbers(v, f"{prefix}{k}.")
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        flat[prefix.rstrip(".")] = float(data)
    return flat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--peer-site", type=Path)
    parser.add_argument("--steps", nargs="+", default=["after", "profile", "before", "peer"])
    parser.add_argument("--model", type=Path, default=Path("/tmp/llama1b"))
    parser.add_argument("--cycles", type=int, default=3, help="of 'after' and the peer")
    parser.add_argument("--sampler-hz", default="[0, 10]", help="the 'after' grid's rates")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the peer stops by then")
    parser.add_argument("--small", action="store_true", help="CPU smoke: 8 prompts, 8 tokens")
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--peer-cycles", type=int, default=0, help="0: --cycles")
    parser.add_argument(
        "--peer-baseline-s", type=float, default=30.0, help="0.7.0's idle baseline (its default)"
    )
    args = parser.parse_args()
    global N_PROMPTS, BATCH, TOKENS, CYCLES, HZ
    CYCLES, HZ, N_PROMPTS = args.cycles, args.sampler_hz, args.n_prompts
    if args.small:
        N_PROMPTS, BATCH, TOKENS = 8, 4, 8
    deadline = time.monotonic() + args.budget_s
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model: Path = args.model
    if not (model / "config.json").exists() and not args.small:
        subprocess.run(
            [sys.executable, str(ROOT / "tools" / "make_random_llama.py"), str(model)], check=True
        )
    summary: dict[str, Any] = {}
    summary_path = out / "summary.json"
    for step in args.steps:
        t0 = time.monotonic()
        try:
            if step == "after":
                summary[step] = campaign("after", out, model, CYCLES, "{runs: 3}", {}, "", deadline)
            elif step == "graphs":
                summary[step] = campaign(
                    "graphs", out, model, CYCLES, "{runs: 3}", {}, GRAPHS, deadline
                )
            elif step == "before":
                env = {"LEM_FORK_SERVER": "0"}
                summary[step] = campaign(
                    "before", out, model, 2, "{runs: 3, cover: first_batch}", env
                )
            elif step == "profile":
                summary[step] = profile(model, out)
            elif step == "hostprobe":
                summary[step] = hostprobe(model, deadline)
            elif step == "peer" and args.peer_site:
                summary[step] = peer(
                    model,
                    out,
                    args.peer_site,
                    deadline,
                    args.peer_baseline_s,
                    args.peer_cycles or CYCLES,
                )
        except Exception as e:
            summary[step] = {"error": repr(e)}
            print(step, "failed:", repr(e), flush=True)
        summary.setdefault("step_s", {})[step] = time.monotonic() - t0
        summary_path.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
