"""TensorRT-LLM's server for `mode: server`: `trtllm-serve MODEL --backend tensorrt`, its
OpenAI-compatible server (/health, streaming /v1/completions with stream_options.include_usage).

Written to trtllm-serve's CLI and request schema as TensorRT-LLM 1.x's sources define them
(tensorrt_llm/commands/serve.py, tensorrt_llm/serve/openai_protocol.py) and NOT run by this
project (it needs an NVIDIA GPU and TensorRT-LLM): its tests check the command and request
fields composed here. trtllm-serve builds the engine from the checkpoint at every launch (no
engine cache, unlike the offline backend); that time falls in the server's launch, recorded
apart from the levels.

Its flags are underscored (`--max_batch_size`); what has no flag (dtype, quantisation, KV-cache
settings, passthrough kwargs) goes in the LLM-API options file it reads with `--config`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.backends.base import Server
from llenergymeasure.backends.common import ENGINE_DTYPES
from llenergymeasure.backends.tensorrt import (
    KV_CACHE_QUANT_ALGOS,
    QUANT_ALGOS,
    BuildLimits,
    engine_cache_root,
)
from llenergymeasure.config.backends import TensorRTConfig
from llenergymeasure.config.experiment import ExperimentConfig, config_hash


def llm_api_options(config: ExperimentConfig) -> dict[str, Any]:
    """The LLM-API arguments trtllm-serve takes only from its options file."""
    settings = config.backend_settings(TensorRTConfig)
    options: dict[str, Any] = {"dtype": ENGINE_DTYPES[config.precision]}
    quant: dict[str, str] = {}
    if config.quantization is not None:
        quant["quant_algo"] = QUANT_ALGOS[config.quantization]
    if settings.kv_cache_dtype != "auto":
        quant["kv_cache_quant_algo"] = KV_CACHE_QUANT_ALGOS[settings.kv_cache_dtype]
    if quant:
        options["quant_config"] = quant
    kv_cache: dict[str, Any] = {}
    if settings.kv_cache_free_gpu_memory_fraction is not None:
        kv_cache["free_gpu_memory_fraction"] = settings.kv_cache_free_gpu_memory_fraction
    if settings.enable_kv_cache_block_reuse is not None:
        kv_cache["enable_block_reuse"] = settings.enable_kv_cache_block_reuse
    if kv_cache:
        options["kv_cache_config"] = kv_cache
    if settings.enable_chunked_prefill is not None:
        options["enable_chunked_prefill"] = settings.enable_chunked_prefill
    return options | config.passthrough_kwargs


class TRTLLMServer(Server):
    def command(self, config: ExperimentConfig, model_path: str, port: int) -> list[str]:
        settings = config.backend_settings(TensorRTConfig)
        limits = BuildLimits.of(config)  # the same build limits as the offline engine
        flags: dict[str, object] = {
            "max_batch_size": limits.max_batch_size,
            "max_seq_len": limits.max_seq_len,
            "max_num_tokens": limits.max_num_tokens,
            "tp_size": settings.tensor_parallel_size,
            "pp_size": settings.pipeline_parallel_size,
            "config": _options_file(llm_api_options(config)),
        }
        return [
            str(Path(sys.executable).parent / "trtllm-serve"),
            model_path,
            "--backend",
            "tensorrt",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *[part for k, v in flags.items() if v is not None for part in (f"--{k}", str(v))],
        ]

    def request_fields(self, config: ExperimentConfig) -> dict[str, object]:
        """OpenAI's fields plus trtllm-serve's sampling extras; top_k 1 is its greedy (as the
        offline backend's), 0 switches top-k off."""
        d = config.decoding
        fields = super().request_fields(config)
        fields |= {"ignore_eos": d.ignore_eos, "repetition_penalty": d.repetition_penalty}
        fields["top_k"] = 1 if d.strategy == "greedy" else d.top_k
        if d.min_output_tokens is not None:
            fields["min_tokens"] = d.min_output_tokens
        return fields


def _options_file(options: dict[str, Any]) -> Path:
    """The options as a file named by its content, beside the engine cache (JSON is YAML, which
    trtllm-serve reads with yaml.safe_load); the same settings reuse the same file."""
    text = json.dumps(options, sort_keys=True, indent=1)
    path = engine_cache_root() / "serve-options" / f"{config_hash(options)[:20]}.yaml"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)  # workers launching at once see a whole file
    return path
