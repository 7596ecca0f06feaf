"""The TensorRT-LLM backend's engine cache key and its missing-library message: pure logic that
runs without TensorRT-LLM (the real engine tests are in tests/tensorrt_engine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.backends import get_backend
from llenergymeasure.backends.tensorrt import (
    ENGINE_CACHE_ENV,
    BuildLimits,
    TensorRTBackend,
    engine_cache_root,
    engine_dir_for,
    engine_key,
)
from llenergymeasure.config.experiment import ExperimentConfig, config_hash
from llenergymeasure.errors import BackendError

BASE: dict[str, Any] = {
    "backend": "tensorrt",
    "precision": "fp16",
    "batch_size": 8,
    "max_input_tokens": 100,
    "max_output_tokens": 28,
}


def key_of(
    change: dict[str, Any], version: str = "1.2.0", gpus: tuple[str, ...] = ("H100",)
) -> str:
    config = ExperimentConfig.model_validate(BASE | change)
    return config_hash(engine_key(config, "/models/m", version, list(gpus)))


def test_build_limits_default_to_what_the_experiment_needs() -> None:
    limits = BuildLimits.of(ExperimentConfig.model_validate(BASE))
    assert limits == BuildLimits(max_batch_size=8, max_seq_len=128, max_num_tokens=None)
    explicit = ExperimentConfig.model_validate(
        BASE | {"tensorrt": {"max_batch_size": 64, "max_seq_len": 4096, "max_num_tokens": 8192}}
    )
    assert BuildLimits.of(explicit) == BuildLimits(64, 4096, 8192)


def test_build_limit_too_short_for_the_requests_is_an_error() -> None:
    config = ExperimentConfig.model_validate(BASE | {"tensorrt": {"max_seq_len": 100}})
    with pytest.raises(BackendError, match=r"max_seq_len is 100 but .* is 128"):
        BuildLimits.of(config)


def test_same_build_same_key_whatever_else_changes() -> None:
    # settings that do not shape the engine (prompts, decoding, runtime KV fraction) share it
    assert key_of({}) == key_of(
        {
            "n_prompts": 99,
            "seed": 1,
            "decoding": {"strategy": "sampling", "temperature": 0.5},
            "tensorrt": {"kv_cache_free_gpu_memory_fraction": 0.5},
        }
    )


@pytest.mark.parametrize(
    "change",
    [
        {"precision": "bf16"},
        {"quantization": "fp8"},
        {"quantization": "int4_weight_only"},
        {"tensorrt": {"tensor_parallel_size": 2}},
        {"tensorrt": {"pipeline_parallel_size": 2}},
        {"batch_size": 16},
        {"tensorrt": {"max_batch_size": 32}},
        {"max_output_tokens": 29},
        {"tensorrt": {"max_seq_len": 2048}},
        {"tensorrt": {"max_num_tokens": 4096}},
        {"tensorrt": {"kv_cache_dtype": "fp8"}},
        {"passthrough_kwargs": {"fast_build": True}},
    ],
)
def test_every_build_dimension_changes_the_key(change: dict[str, Any]) -> None:
    assert key_of(change) != key_of({})


def test_library_version_and_gpu_model_change_the_key() -> None:
    assert key_of({}, version="1.2.1") != key_of({})
    assert key_of({}, gpus=("A100",)) != key_of({})


def test_model_files_are_part_of_the_key(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    config = ExperimentConfig.model_validate(BASE)
    before = engine_key(config, str(tmp_path), "1.2.0", [])
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    after = engine_key(config, str(tmp_path), "1.2.0", [])
    assert before["model_files"] is not None
    assert before["model_files"] != after["model_files"]


def test_engine_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENGINE_CACHE_ENV, str(tmp_path / "engines"))
    assert engine_cache_root() == tmp_path / "engines"
    key = engine_key(ExperimentConfig.model_validate(BASE), "m", "1.2.0", [])
    assert engine_dir_for(key).parent == tmp_path / "engines"
    monkeypatch.delenv(ENGINE_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache_root() == tmp_path / "xdg" / "llenergymeasure" / "tensorrt-engines"


def test_backend_module_imports_without_tensorrt_llm() -> None:
    assert get_backend("tensorrt") is TensorRTBackend


def test_missing_tensorrt_llm_is_a_backend_error_naming_what_to_install() -> None:
    if importlib.util.find_spec("tensorrt_llm") is not None:
        pytest.skip("TensorRT-LLM is installed here; this checks the message where it is not")
    backend = TensorRTBackend(ExperimentConfig.model_validate(BASE))
    with pytest.raises(BackendError) as info, backend:
        pass
    message = str(info.value)
    assert "needs TensorRT-LLM" in message
    assert "llenergymeasure[tensorrt]" in message
    assert "tensorrt image" in message
