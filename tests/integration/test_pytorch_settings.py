"""The PyTorch backend's energy-relevant settings on the real tiny model: each one reaches
transformers (engine_settings reads it back from the loaded model), and a setting whose package
is missing here is a BackendError saying what to install."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch

from llenergymeasure.backends.pytorch import PyTorchBackend, reused_static_cache
from llenergymeasure.config.experiment import DecodingConfig, ExperimentConfig
from llenergymeasure.errors import BackendError

pytestmark = pytest.mark.integration
PROMPTS = ["The quick brown fox", "Energy per token", "A third prompt"]


def run(**config: Any) -> tuple[dict[str, Any], list[int]]:
    """Load, generate once, and return (engine settings, output tokens per request)."""
    experiment = ExperimentConfig.model_validate(
        {"max_output_tokens": 4, "batch_size": 2, **config}
    )
    with PyTorchBackend(experiment) as backend:
        outputs = backend.generate(PROMPTS)
        return backend.engine_settings(), [o.output_tokens for o in outputs]


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", "float32"), ("fp16", "float16"), ("bf16", "bfloat16")]
)
def test_precision_reaches_the_model(precision: str, dtype: str) -> None:
    settings, tokens = run(precision=precision)
    assert settings["dtype"] == dtype
    assert tokens == [4, 4, 4]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_kernel_reaches_the_model(attn: str) -> None:
    settings, _ = run(pytorch={"attn_implementation": attn})
    assert settings["attn_implementation"] == attn


def test_device_map_places_the_model_through_accelerate() -> None:
    settings, tokens = run(pytorch={"device_map": "auto"})
    # no GPU here: accelerate keeps every layer on the CPU (spreading needs several GPUs)
    assert settings["weight_devices"] == ["cpu"]
    assert tokens == [4, 4, 4]


def test_torch_compile_with_a_static_kv_cache() -> None:
    settings, tokens = run(pytorch={"torch_compile": "default", "cache_implementation": "static"})
    assert settings["torch_compile"] == "default"
    assert settings["cache_implementation"] == "static"
    assert tokens == [4, 4, 4]


def test_decode_ran_is_recorded_and_cuda_graphs_needs_a_gpu() -> None:
    settings, _ = run()
    assert settings["decode"] == "eager"  # no compiled step on the model
    # auto device on this CPU-only machine: the backend refuses rather than run eager
    with pytest.raises(BackendError, match="cuda_graphs needs a CUDA device"):
        run(pytorch={"decode": "cuda_graphs"})


def test_the_reused_static_cache_decodes_as_generates_own() -> None:
    """decode: cuda_graphs keeps one static cache per batch size across generate calls
    (emptied in place, so captured graphs keep its addresses): the tokens must be those of
    generate's own fresh cache, batch after batch of different lengths."""
    config = ExperimentConfig.model_validate({"max_output_tokens": 6, "batch_size": 2})
    caches: dict[int, Any] = {}
    with PyTorchBackend(config) as backend:
        batches = backend.prepare([*PROMPTS, "One more, longer prompt than the others here"])
        pointers = set()
        for batch in [*batches, *batches]:
            with torch.inference_mode():
                cache = reused_static_cache(caches, backend.model, 2, config)
                fresh = backend.model.generate(**batch.inputs, **backend.generate_kwargs())
                reused = backend.model.generate(
                    **batch.inputs, **backend.generate_kwargs(), past_key_values=cache
                )
            assert torch.equal(fresh, reused)
            pointers.add(cache.layers[0].keys.data_ptr())
    assert len(caches) == 1 and len(pointers) == 1


def test_decoding_settings_reach_generate() -> None:
    decoding = DecodingConfig(
        strategy="sampling", temperature=0.7, top_p=0.9, top_k=5, ignore_eos=False
    )
    backend = PyTorchBackend(ExperimentConfig(max_output_tokens=6, decoding=decoding))
    with backend:
        kwargs = backend.generate_kwargs()
    assert kwargs | {"temperature": 0.7, "top_p": 0.9, "top_k": 5, "do_sample": True} == kwargs
    assert "min_new_tokens" not in kwargs
    greedy = DecodingConfig(ignore_eos=False, min_output_tokens=3)
    with PyTorchBackend(ExperimentConfig(max_output_tokens=6, decoding=greedy)) as backend:
        assert backend.generate_kwargs()["min_new_tokens"] == 3


@pytest.mark.parametrize(
    ("config", "package", "hint"),
    [
        ({"pytorch": {"attn_implementation": "flash_attention_2"}}, "flash_attn", "flash-attn"),
        ({"quantization": "bnb_4bit"}, "bitsandbytes", "pip install bitsandbytes"),
        ({"quantization": "bnb_8bit"}, "bitsandbytes", "pip install bitsandbytes"),
    ],
)
def test_missing_package_is_a_backend_error_naming_it(
    config: dict[str, Any], package: str, hint: str
) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here; this checks the message where it is not")
    with pytest.raises(BackendError, match=f"needs the {package} package") as info:
        run(**config)
    assert hint in str(info.value)
