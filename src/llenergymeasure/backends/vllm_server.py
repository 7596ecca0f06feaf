"""vLLM's server for `mode: server`: its OpenAI-compatible API server, which also takes vLLM's
own sampling fields (ignore_eos, min_tokens, ...)."""

from __future__ import annotations

import sys
from typing import Any

from llenergymeasure.backends.base import Server, cli_flags
from llenergymeasure.backends.common import ENGINE_DTYPES, cpu_memory_share, on_cpu
from llenergymeasure.config.backends import VLLMConfig
from llenergymeasure.config.experiment import ExperimentConfig


class VLLMServer(Server):
    def command(self, config: ExperimentConfig, model_path: str, port: int) -> list[str]:
        settings: dict[str, Any] = {"dtype": ENGINE_DTYPES[config.precision], "seed": config.seed}
        if config.quantization is not None:
            settings["quantization"] = config.quantization
        vllm = config.backend_settings(VLLMConfig)
        if on_cpu() and vllm.gpu_memory_utilization is None and vllm.kv_cache_memory_bytes is None:
            # on a CPU its default 0.92 is a share of host RAM, refused if not free at start
            settings["gpu_memory_utilization"] = cpu_memory_share()
        settings |= vllm.model_dump(exclude_none=True)
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_path,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *cli_flags(settings | config.passthrough_kwargs),
        ]

    def request_fields(self, config: ExperimentConfig) -> dict[str, object]:
        d = config.decoding
        fields = super().request_fields(config)
        fields |= {"ignore_eos": d.ignore_eos, "repetition_penalty": d.repetition_penalty}
        if d.strategy == "sampling":
            fields["top_k"] = d.top_k or -1
        if d.min_output_tokens is not None:
            fields["min_tokens"] = d.min_output_tokens
        return fields
