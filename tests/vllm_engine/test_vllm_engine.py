"""The vLLM backend in this process, on a real engine: every setting reaches the engine, outputs
and request metrics come back, and the engine's processes end on close (also after an error)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from vllm_helpers import KV_CACHE_BYTES, engine_processes, needs_fp8_kv_cache

from llenergymeasure.backends import get_backend
from llenergymeasure.backends.common import checkpoint_shape
from llenergymeasure.config.backends import VLLMConfig
from llenergymeasure.config.experiment import DecodingConfig, ExperimentConfig
from llenergymeasure.datasets import builtin_prompts
from llenergymeasure.errors import BackendError
from llenergymeasure.models import resolve_model

vllm = pytest.importorskip(
    "vllm", reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm"
)
from llenergymeasure.backends.vllm import VLLMBackend  # noqa: E402  (needs vllm)

MAX_OUTPUT_TOKENS = 6
SETTINGS = VLLMConfig(
    max_num_seqs=3,
    max_num_batched_tokens=384,
    gpu_memory_utilization=0.5,
    kv_cache_memory_bytes=KV_CACHE_BYTES,
    enforce_eager=True,
    enable_prefix_caching=False,
    enable_chunked_prefill=False,
    kv_cache_dtype="bfloat16",  # not fp8: the shared engine must start on any x86-64 CPU
    block_size=32,
    tensor_parallel_size=1,
    max_model_len=320,
)
CONFIG = ExperimentConfig(
    backend="vllm",
    precision="bf16",
    n_prompts=5,
    max_input_tokens=24,
    max_output_tokens=MAX_OUTPUT_TOKENS,
    batch_size=2,
    seed=7,
    vllm=SETTINGS,
)


@pytest.fixture(scope="module")
def engine() -> Iterator[VLLMBackend]:
    """One real engine with every vLLM setting away from its default, shared by this module."""
    with VLLMBackend(CONFIG) as backend:
        assert isinstance(backend, VLLMBackend)
        yield backend


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return builtin_prompts()[: CONFIG.n_prompts]


def test_registry_finds_the_vllm_backend() -> None:
    assert get_backend("vllm") is VLLMBackend


def test_every_setting_reaches_the_engine(engine: VLLMBackend) -> None:
    settings = engine.engine_settings()
    assert settings == settings | {
        "device": "cpu",
        "dtype": "bfloat16",
        "quantization": None,
        "seed": 7,
        "max_num_seqs": 3,
        "max_num_batched_tokens": 384,
        "gpu_memory_utilization": 0.5,
        "kv_cache_memory_bytes": KV_CACHE_BYTES,
        "enforce_eager": True,
        "enable_prefix_caching": False,
        "enable_chunked_prefill": False,
        "kv_cache_dtype": "bfloat16",
        "block_size": 32,
        "tensor_parallel_size": 1,
        "max_model_len": 320,
        "multiproc_method": "spawn",
    }
    # engine_settings reads the engine's own resolved config: check it against vLLM's object
    config = engine.llm.llm_engine.vllm_config
    assert config.scheduler_config.max_num_seqs == 3
    assert config.cache_config.block_size == 32
    assert config.cache_config.cache_dtype == "bfloat16"
    assert str(config.model_config.dtype) == "torch.bfloat16"


def test_engine_arguments_leave_unset_settings_to_vllm() -> None:
    kwargs = VLLMBackend(ExperimentConfig(backend="vllm")).engine_kwargs()
    assert kwargs == {
        "dtype": "float32",
        "seed": 42,
        "disable_log_stats": False,
        "tensor_parallel_size": 1,
    }


def test_quantization_and_passthrough_reach_the_engine_arguments() -> None:
    config = ExperimentConfig(
        backend="vllm", quantization="fp8", passthrough_kwargs={"swap_space": 1}
    )
    kwargs = VLLMBackend(config).engine_kwargs()
    assert kwargs["quantization"] == "fp8"
    assert kwargs["swap_space"] == 1


def test_greedy_decoding_as_vllm_sampling_params() -> None:
    params = VLLMBackend(CONFIG).sampling_params()
    assert isinstance(params, vllm.SamplingParams)
    assert params.temperature == 0.0  # vLLM's greedy
    assert params.max_tokens == MAX_OUTPUT_TOKENS
    assert params.ignore_eos is True
    assert params.repetition_penalty == 1.0


def test_sampling_decoding_as_vllm_sampling_params() -> None:
    decoding = DecodingConfig(
        strategy="sampling",
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        repetition_penalty=1.1,
        ignore_eos=False,
        min_output_tokens=3,
    )
    config = ExperimentConfig(backend="vllm", max_output_tokens=9, decoding=decoding)
    params = VLLMBackend(config).sampling_params()
    assert (params.temperature, params.top_p, params.top_k) == (0.7, 0.9, 20)
    assert params.repetition_penalty == 1.1
    assert params.ignore_eos is False
    assert (params.min_tokens, params.max_tokens) == (3, 9)


def test_generate_counts_tokens_and_reads_request_metrics(
    engine: VLLMBackend, prompts: list[str]
) -> None:
    outputs = engine.generate(prompts)
    assert len(outputs) == len(prompts)
    expected_inputs = [
        len(engine.tokenizer(p, truncation=True, max_length=CONFIG.max_input_tokens).input_ids)
        for p in prompts
    ]
    assert [o.input_tokens for o in outputs] == expected_inputs
    assert all(o.output_tokens == MAX_OUTPUT_TOKENS for o in outputs)
    for o in outputs:
        assert o.ttft_s is not None and 0 < o.ttft_s <= o.latency_s
        assert o.inter_token_latency_s is not None and o.inter_token_latency_s > 0
    # batch_size 2: prompts go to the engine two per LLM.generate call, sharing its wall time
    latencies = [o.latency_s for o in outputs]
    assert latencies[0] == latencies[1] and latencies[2] == latencies[3]


@needs_fp8_kv_cache
def test_fp8_kv_cache_reaches_the_engine(no_engine_left: None, prompts: list[str]) -> None:
    config = CONFIG.model_copy(
        update={"vllm": SETTINGS.model_copy(update={"kv_cache_dtype": "fp8"})}
    )
    with VLLMBackend(config) as backend:
        assert backend.llm.llm_engine.vllm_config.cache_config.cache_dtype == "fp8"
        outputs = backend.generate(prompts[:2])
    assert [o.output_tokens for o in outputs] == [MAX_OUTPUT_TOKENS] * 2


def test_model_shape_matches_the_checkpoint(engine: VLLMBackend) -> None:
    shape = engine.model_shape()
    assert shape is not None
    assert shape == checkpoint_shape(resolve_model("builtin:tiny-llama"))
    assert (shape.n_layers, shape.attention_dim) == (2, 128)


def test_cpu_engine_measures_no_gpu_and_names_its_versions(engine: VLLMBackend) -> None:
    assert engine.cuda_devices() == []
    assert engine.device_description() == "cpu"
    assert engine.peak_memory() is None
    assert engine.library_versions()["vllm"] == vllm.__version__


def test_close_ends_the_engine_processes() -> None:
    before = engine_processes()
    backend = VLLMBackend(CONFIG)
    with backend:
        started = engine_processes() - before
        assert started, "vLLM should run its engine in processes of its own"
    assert not (engine_processes() & started)
    with pytest.raises(BackendError, match="before the engine was started"):
        backend.generate(["x"])


def test_engine_processes_end_when_the_body_raises(no_engine_left: None) -> None:
    with pytest.raises(RuntimeError, match="boom"), VLLMBackend(CONFIG):
        raise RuntimeError("boom")


def test_engine_that_cannot_start_is_a_backend_error(no_engine_left: None) -> None:
    # fp8 weight quantisation reaches the engine, whose CPU build has no kernel for it
    config = CONFIG.model_copy(update={"quantization": "fp8"})
    with pytest.raises(BackendError, match="vLLM could not start an engine") as info:  # noqa: SIM117
        with VLLMBackend(config):
            pass
    assert "builtin:tiny-llama" in str(info.value)
