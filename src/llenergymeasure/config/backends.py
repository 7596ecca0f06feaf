"""Settings sections of the vLLM and TensorRT-LLM backends (`vllm:` and `tensorrt:`).

A null setting is left to the engine's own default, and a null value is not part of the
experiment id (see ExperimentConfig.identity), so adding a setting here never renames stored
experiments. Validation only: nothing here imports an engine.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OMIT_IF_NULL: dict[str, Any] = {"omit_from_id_if_null": True}
"""json_schema_extra of a field that leaves the experiment id unchanged while it is null."""

ENGINE_DEFAULT = " Null: the engine's default."


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class VLLMConfig(_Section):
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


class TensorRTConfig(_Section):
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
