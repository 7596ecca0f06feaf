"""The PyTorch backend's energy-relevant settings on a real CUDA device (run on the device
machine): each setting reaches the loaded model, and a campaign over them measures energy.

tests/integration/test_pytorch_settings.py checks the same settings on a CPU; here the ones
that only mean something on a GPU (half precision kernels, flash attention, bitsandbytes,
layers spread over several GPUs) run for real, and skip with the reason where the package or
the second GPU is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.backends.pytorch import PyTorchBackend
from llenergymeasure.config.experiment import ExperimentConfig

PROMPTS = ["The quick brown fox", "Energy per token", "A third prompt", "And a fourth"]
MAX_TOKENS = 8


def run(**config: Any) -> tuple[dict[str, Any], list[int], list[str] | None]:
    """Load on cuda, generate once: (engine settings, output tokens per request, CUDA devices)."""
    experiment = ExperimentConfig.model_validate(
        {"max_output_tokens": MAX_TOKENS, "batch_size": 2, **config}
        | {"pytorch": {"device": "cuda", **config.get("pytorch", {})}}
    )
    with PyTorchBackend(experiment) as backend:
        outputs = backend.generate(PROMPTS)
        return (
            backend.engine_settings(),
            [o.output_tokens for o in outputs],
            backend.cuda_devices(),
        )


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed on this GPU machine")


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", "float32"), ("fp16", "float16"), ("bf16", "bfloat16")]
)
def test_precision_on_cuda(precision: str, dtype: str) -> None:
    settings, tokens, uuids = run(precision=precision)
    assert settings["dtype"] == dtype
    assert settings["weight_devices"] == ["cuda:0"]
    assert tokens == [MAX_TOKENS] * len(PROMPTS)
    assert uuids is not None and len(uuids) == 1 and uuids[0].startswith("GPU-")


@pytest.mark.parametrize("attn", ["eager", "sdpa", "flash_attention_2"])
def test_attention_kernel_on_cuda(attn: str) -> None:
    if attn == "flash_attention_2":
        _needs("flash_attn")
    settings, tokens, _ = run(precision="bf16", pytorch={"attn_implementation": attn})
    assert settings["attn_implementation"] == attn
    assert tokens == [MAX_TOKENS] * len(PROMPTS)


def test_torch_compile_with_a_static_kv_cache_on_cuda() -> None:
    settings, tokens, _ = run(
        precision="bf16", pytorch={"torch_compile": "default", "cache_implementation": "static"}
    )
    assert settings["torch_compile"] == "default"
    assert settings["cache_implementation"] == "static"
    assert tokens == [MAX_TOKENS] * len(PROMPTS)


@pytest.mark.parametrize("quantization", ["bnb_4bit", "bnb_8bit"])
def test_bitsandbytes_quantization_on_cuda(quantization: str) -> None:
    _needs("bitsandbytes")
    settings, tokens, _ = run(precision="fp16", quantization=quantization)
    bits = settings["quantization"]
    assert bits["load_in_4bit" if quantization == "bnb_4bit" else "load_in_8bit"] is True
    assert tokens == [MAX_TOKENS] * len(PROMPTS)


def test_device_map_spreads_layers_over_every_visible_gpu() -> None:
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        pytest.skip(f"device_map over several GPUs needs 2 or more; this machine has {count}")
    settings, tokens, uuids = run(precision="bf16", pytorch={"device_map": "balanced"})
    assert settings["weight_devices"] == [f"cuda:{i}" for i in range(count)]
    assert tokens == [MAX_TOKENS] * len(PROMPTS)
    assert uuids is None  # the session then measures every visible GPU


def test_campaign_over_gpu_settings_measures_energy_for_each(tmp_path: Path) -> None:
    """The settings through `lem campaign`: every experiment measured by the energy counter."""
    campaign = tmp_path / "settings.yaml"
    campaign.write_text(
        "name: gpu-settings\ncycles: 1\n"
        "base:\n  pytorch: {device: cuda}\n  n_prompts: 8\n  max_output_tokens: 16\n"
        "  warmup: {runs: 1}\n"
        "  measurement: {baseline: {duration_s: 1.0}}\n"
        "grid:\n  precision: [fp16, bf16]\n"
        "  pytorch.attn_implementation: [eager, sdpa]\n",
        encoding="utf-8",
    )
    command = ["campaign", str(campaign), "-o", str(tmp_path / "out"), "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "llenergymeasure.cli", *command],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in tmp_path.glob("out/*/*/cycle-1/result.json")]
    assert len(results) == 4
    seen = set()
    for r in results:
        seen.add(
            (
                r["offline"]["engine_settings"]["dtype"],
                r["offline"]["engine_settings"]["attn_implementation"],
            )
        )
        assert r["energy"]["energy_raw_j"] > 0
        assert r["environment"]["device"].startswith("cuda")
    assert seen == {(d, a) for d in ("float16", "bfloat16") for a in ("eager", "sdpa")}
