"""The TensorRT-LLM backend on a real engine: build once, load from the cache the second time,
and serve the tiny model. Runs only where TensorRT-LLM and an NVIDIA GPU are present (the
tensorrt image); elsewhere it skips, saying why. Not yet run by this project."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure.backends.tensorrt import ENGINE_CACHE_ENV, TensorRTBackend
from llenergymeasure.config.experiment import ExperimentConfig

pytest.importorskip(
    "tensorrt_llm", reason="TensorRT-LLM is not installed (NVIDIA GPUs only; the tensorrt image)"
)
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("TensorRT-LLM needs an NVIDIA GPU", allow_module_level=True)

CONFIG = ExperimentConfig.model_validate(
    {
        "backend": "tensorrt",
        "precision": "fp16",
        "n_prompts": 4,
        "max_input_tokens": 32,
        "max_output_tokens": 8,
        "batch_size": 2,
    }
)
PROMPTS = ["The quick brown fox", "Energy per token", "A third prompt", "And a fourth"]


def test_build_then_load_from_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENGINE_CACHE_ENV, str(tmp_path))
    with TensorRTBackend(CONFIG) as first:
        assert isinstance(first, TensorRTBackend)
        assert first.engine_settings()["engine_cache"] == "built"
        outputs = first.generate(PROMPTS)
    assert [o.output_tokens for o in outputs] == [8] * 4
    assert all(o.ttft_s is not None and o.ttft_s > 0 for o in outputs)
    with TensorRTBackend(CONFIG) as second:
        assert isinstance(second, TensorRTBackend)
        settings = second.engine_settings()
        assert settings["engine_cache"] == "hit"
        assert settings["build"]["max_batch_size"] == 2
        assert [o.output_tokens for o in second.generate(PROMPTS)] == [8] * 4
    assert len(list(tmp_path.iterdir())) == 1
