"""GPU benchmark: the tool's own cost on a ~1B-parameter random-weight Llama (needs a GPU).

    PYTHONPATH=src python benchmarks/gpu_overhead.py --out DIR [--workloads ...]

In one process, in rotating order each round (so drift hits every arm), two workloads:
  - decode-heavy (64-token prompts, 128 new tokens, batch 32): `generate` is launch-bound on
    the host CPU, the case where a sampler thread could slow it most. Arms: the PyTorch backend
    with the sampler off, at 1, 10 and 50 Hz, and a plain transformers loop (tokenise,
    `model.generate`, synchronise) on the same model, prompts, batch and lengths. About 37 s a
    round on an H100.
  - prefill-heavy (1024-token prompts, 8 new tokens, batch 64): more of the time on the GPU.
    Arms: the backend with the sampler off, at 10 and 50 Hz. About 6 s a round.
Reports per-arm median tokens/s with min-max spread, and each arm's ratio to the sampler-off
run of the same round (median, interquartile range, and mean with a 95% bootstrap interval).
Run the workloads in separate calls where a call's time is limited.

`--paired-batches SECONDS` measures instead, for each workload, one batch at a time: pairs of
one batch with the sampler off and one with it at `--paired-hz` (10), in seeded random order
within the pair, until SECONDS have passed. Host-load drift, which makes whole rounds vary by
±6-20%, changes little within one pair, so many short pairs resolve a smaller cost than a few
long rounds. The sampler is started and stopped around each batch, so its start-up counts
against it. Reports the mean paired ratio with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from llenergymeasure.backends.pytorch import PyTorchBackend
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.datasets.select import select_prompts
from llenergymeasure.measure.nvml import NvmlGpu, nvml_session
from llenergymeasure.measure.sampler import Sampler

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def plain_loop(backend: PyTorchBackend, prompts: list[str]) -> int:
    """What a researcher would write by hand: the reference for the backend's overhead."""
    model, tokenizer, cfg = backend.model, backend.tokenizer, backend.config
    tokens = 0
    for start in range(0, len(prompts), cfg.batch_size):
        enc = tokenizer(
            prompts[start : start + cfg.batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=cfg.max_input_tokens,
        ).to("cuda")
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=cfg.max_output_tokens,
                min_new_tokens=cfg.max_output_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        torch.cuda.synchronize()
        tokens += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return int(tokens)


BUSY: dict[str, list[float]] = {}


@contextlib.contextmanager
def sampler_at(gpu: NvmlGpu, hz: float) -> Iterator[None]:
    """Run the sampler at hz around the block; record the share of time it spent in reads."""
    if hz == 0:
        yield
        return
    t0 = time.perf_counter()
    with Sampler([gpu], hz) as sampler:
        yield
    BUSY.setdefault(f"{hz:g}", []).append(sum(sampler.busy_s.values()) / (time.perf_counter() - t0))


WORKLOADS = {
    "decode_heavy": {
        "batch_size": 32,
        "n_prompts": 128,
        "prompts": {"source": "synthetic", "input_tokens": 64},
        "max_input_tokens": 128,
        "max_output_tokens": 128,
    },
    "prefill_heavy": {
        "batch_size": 64,
        "n_prompts": 256,
        "prompts": {"source": "synthetic", "input_tokens": 1024},
        "max_input_tokens": 1024,
        "max_output_tokens": 8,
    },
}
SAMPLER_HZ = {"decode_heavy": (0.0, 1.0, 10.0, 50.0), "prefill_heavy": (0.0, 10.0, 50.0)}


def measure(workload: str, model_dir: Path, rounds: int) -> dict[str, Any]:
    """Every arm of one workload, `rounds` times in rotating order after one warm-up pass."""
    config = ExperimentConfig.model_validate(
        {"model": str(model_dir), "precision": "bf16", **WORKLOADS[workload]}
    )
    results: dict[str, list[float]] = {}
    BUSY.clear()
    with nvml_session() as pynvml, PyTorchBackend(config) as backend:
        uuids = backend.gpu_uuids() or []
        gpu = NvmlGpu(pynvml, uuids[0])
        prompts = select_prompts(config, Path.cwd(), backend.tokenizer)
        arms: dict[str, Callable[[], int]] = {}
        for hz in SAMPLER_HZ[workload]:

            def run(hz: float = hz) -> int:
                with sampler_at(gpu, hz):
                    return sum(o.output_tokens for o in backend.generate(prompts))

            arms[f"backend_sampler_{hz:g}hz"] = run
        if workload == "decode_heavy":
            arms["plain_transformers_loop"] = lambda: plain_loop(backend, prompts)
        for name, fn in arms.items():  # warm-up: one pass of each arm
            fn()
            results[name] = []
        BUSY.clear()
        names = list(arms)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                t0 = time.perf_counter()
                tokens = arms[name]()
                results[name].append(tokens / (time.perf_counter() - t0))
            print(
                f"{workload} round {r + 1}: "
                + ", ".join(f"{n} {results[n][-1]:.0f}" for n in names),
                flush=True,
            )
        gpu_name = backend.device_description()
    off = results["backend_sampler_0hz"]
    ref = statistics.median(off)
    arms_out = {}
    for name, v in results.items():
        paired = [x / o for x, o in zip(v, off, strict=True)]
        q1, _, q3 = statistics.quantiles(paired, n=4)
        low, high = mean_ci95(paired) if name != "backend_sampler_0hz" else (1.0, 1.0)
        arms_out[name] = {
            "median_tokens_per_s": statistics.median(v),
            "min": min(v),
            "max": max(v),
            "ratio_to_sampler_off": statistics.median(v) / ref,
            "paired_ratio_median": statistics.median(paired),
            "paired_ratio_q1": q1,
            "paired_ratio_q3": q3,
            "paired_ratio_mean": statistics.mean(paired),
            "paired_ratio_mean_ci95": [low, high],
            "runs": v,
        }
    return {
        "machine": gpu_name,
        "workload": WORKLOADS[workload],
        "arms": arms_out,
        "sampler_busy_fraction_median": {hz: statistics.median(v) for hz, v in BUSY.items()},
    }


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean (10,000 resamples, seeded)."""
    ci = stats.bootstrap(
        (np.asarray(values),), np.mean, n_resamples=10_000, confidence_level=0.95,
        method="percentile", random_state=np.random.default_rng(0),
    ).confidence_interval  # fmt: skip
    return float(ci.low), float(ci.high)


def measure_pairs(workload: str, model_dir: Path, seconds: float, hz: float) -> dict[str, Any]:
    """Pairs of single batches, sampler off and at hz, in seeded random order, for seconds."""
    config = ExperimentConfig.model_validate(
        {"model": str(model_dir), "precision": "bf16", **WORKLOADS[workload]}
    )
    rng = np.random.default_rng(20261123)
    off: list[float] = []
    on: list[float] = []
    BUSY.clear()
    with nvml_session() as pynvml, PyTorchBackend(config) as backend:
        gpu = NvmlGpu(pynvml, (backend.gpu_uuids() or [])[0])
        batch = select_prompts(config, Path.cwd(), backend.tokenizer)[: config.batch_size]

        def tokens_per_s(rate: float) -> float:
            t0 = time.perf_counter()
            with sampler_at(gpu, rate):
                tokens = sum(o.output_tokens for o in backend.generate(batch))
            return tokens / (time.perf_counter() - t0)

        for rate in (0.0, hz, 0.0, hz):  # warm-up
            tokens_per_s(rate)
        BUSY.clear()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rates = (0.0, hz) if rng.random() < 0.5 else (hz, 0.0)
            got = {rate: tokens_per_s(rate) for rate in rates}
            off.append(got[0.0])
            on.append(got[hz])
        gpu_name = backend.device_description()
    ratios = np.array(on) / np.array(off)
    low, high = mean_ci95(list(ratios))
    result = {
        "machine": gpu_name,
        "workload": WORKLOADS[workload],
        "sampler_hz": hz,
        "pairs": len(ratios),
        "paired_ratio_mean": float(ratios.mean()),
        "paired_ratio_mean_ci95": [low, high],
        "paired_ratio_median": float(np.median(ratios)),
        "sampler_off_median_tokens_per_s": statistics.median(off),
        "sampler_off_cv": statistics.stdev(off) / statistics.mean(off),
        "paired_ratio_sd": float(ratios.std(ddof=1)),
        "sampler_busy_fraction_median": {k: statistics.median(v) for k, v in BUSY.items()},
        "off": off,
        "on": on,
    }
    print(
        f"{workload} pairs: {len(ratios)}, mean on/off {ratios.mean():.4f} "
        f"(95% CI {low:.4f}-{high:.4f}), off CV {result['sampler_off_cv']:.3f}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--prefill-rounds", type=int, default=20)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/lem-llama-1b"))
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--paired-batches", type=float, metavar="SECONDS")
    parser.add_argument("--paired-hz", type=float, default=10.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.model_dir / "config.json").exists():
        subprocess.run(
            [sys.executable, str(TOOLS / "make_random_llama.py"), str(args.model_dir)], check=True
        )
    if args.paired_batches is not None:
        paired = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "PYTHONPATH=src python benchmarks/gpu_overhead.py --out OUT "
            f"--paired-batches {args.paired_batches:g} --paired-hz {args.paired_hz:g} "
            "--workloads " + " ".join(args.workloads),
            "model": "1.04B random Llama (tools/make_random_llama.py), bf16",
            "workloads": {
                w: measure_pairs(w, args.model_dir, args.paired_batches, args.paired_hz)
                for w in args.workloads
            },
        }
        (args.out / "gpu_overhead_pairs.json").write_text(json.dumps(paired, indent=1))
        return
    summary: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "PYTHONPATH=src python benchmarks/gpu_overhead.py --out OUT --rounds "
        f"{args.rounds} --prefill-rounds {args.prefill_rounds} --workloads "
        + " ".join(args.workloads),
        "model": "1.04B random Llama (tools/make_random_llama.py), bf16",
        "workloads": {
            w: measure(
                w, args.model_dir, args.prefill_rounds if w == "prefill_heavy" else args.rounds
            )
            for w in args.workloads
        },
    }
    if "decode_heavy" in summary["workloads"]:
        decode = summary["workloads"]["decode_heavy"]["arms"]
        summary["backend_vs_plain_loop"] = (
            decode["backend_sampler_0hz"]["median_tokens_per_s"]
            / decode["plain_transformers_loop"]["median_tokens_per_s"]
        )
        print("backend / plain loop:", round(summary["backend_vs_plain_loop"], 4))
    (args.out / "gpu_overhead.json").write_text(json.dumps(summary, indent=1))
    for name, w in summary["workloads"].items():
        for arm, v in w["arms"].items():
            low, high = v["paired_ratio_mean_ci95"]
            print(name, arm, f"paired ratio {v['paired_ratio_mean']:.4f} ({low:.4f}-{high:.4f})")
        print(name, "sampler busy fraction:", w["sampler_busy_fraction_median"])


if __name__ == "__main__":
    main()
