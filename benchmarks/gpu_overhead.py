"""GPU benchmark: the tool's own cost on a ~1B-parameter random-weight Llama (needs a GPU).

    PYTHONPATH=src python benchmarks/gpu_overhead.py --out DIR [--rounds 5]

In one process, on one loaded model, in rotating order each round (so drift hits every arm):
  - the PyTorch backend's `generate` with the sampler off, at 1, 10 and 50 Hz;
  - a plain transformers loop (tokenise, `model.generate`, synchronise) on the same model,
    prompts, batch size and lengths, as the reference the backend must keep up with.
Reports per-arm median tokens/s with min-max spread and ratios to the sampler-off arm.
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

import torch

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/lem-llama-1b"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.model_dir / "config.json").exists():
        subprocess.run(
            [sys.executable, str(TOOLS / "make_random_llama.py"), str(args.model_dir)], check=True
        )
    config = ExperimentConfig.model_validate(
        {
            "model": str(args.model_dir),
            "precision": "bf16",
            "batch_size": 32,
            "n_prompts": 128,
            "prompts": {"source": "synthetic", "input_tokens": 64},
            "max_input_tokens": 128,
            "max_output_tokens": 128,
        }
    )
    results: dict[str, list[float]] = {}
    with nvml_session() as pynvml, PyTorchBackend(config) as backend:
        uuids = backend.gpu_uuids() or []
        gpu = NvmlGpu(pynvml, uuids[0])
        prompts = select_prompts(config, Path.cwd(), backend.tokenizer)
        arms: dict[str, Callable[[], int]] = {}
        for hz in (0.0, 1.0, 10.0, 50.0):

            def run(hz: float = hz) -> int:
                with sampler_at(gpu, hz):
                    return sum(o.output_tokens for o in backend.generate(prompts))

            arms[f"backend_sampler_{hz:g}hz"] = run
        arms["plain_transformers_loop"] = lambda: plain_loop(backend, prompts)
        for name, fn in arms.items():  # warm-up: one pass of each arm
            fn()
            results[name] = []
        names = list(arms)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                t0 = time.perf_counter()
                tokens = arms[name]()
                results[name].append(tokens / (time.perf_counter() - t0))
            print(
                f"round {r + 1}: " + ", ".join(f"{n} {results[n][-1]:.0f}" for n in names),
                flush=True,
            )
        gpu_name = backend.device_description()
    ref = statistics.median(results["backend_sampler_0hz"])
    summary: dict[str, Any] = {
        "machine": gpu_name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "PYTHONPATH=src python benchmarks/gpu_overhead.py --out OUT --rounds "
        f"{args.rounds}",
        "workload": "1.04B random Llama, bf16, 128 prompts x 64 tokens, batch 32, 128 new tokens",
        "arms": {
            name: {
                "median_tokens_per_s": statistics.median(v),
                "min": min(v),
                "max": max(v),
                "ratio_to_sampler_off": statistics.median(v) / ref,
                "runs": v,
            }
            for name, v in results.items()
        },
    }
    summary["backend_vs_plain_loop"] = ref / statistics.median(results["plain_transformers_loop"])
    summary["sampler_busy_fraction_median"] = {hz: statistics.median(v) for hz, v in BUSY.items()}
    (args.out / "gpu_overhead.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: round(v["ratio_to_sampler_off"], 4) for k, v in summary["arms"].items()}))
    print("backend / plain loop:", round(summary["backend_vs_plain_loop"], 4))
    print("sampler busy fraction:", summary["sampler_busy_fraction_median"])


if __name__ == "__main__":
    main()
