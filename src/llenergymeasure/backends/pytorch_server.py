"""PyTorch's server for `mode: server`: transformers' own `transformers serve
--continuous-batching` (extra `serve`: fastapi, uvicorn). It refuses request fields it does
not know, so it gets OpenAI's alone (no ignore_eos: some requests may end early). On a CPU its
KV cache is sized by backends.common.cpu_kv_blocks unless passthrough_kwargs sets a `cb_*`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from llenergymeasure.backends.base import Server, cli_flags
from llenergymeasure.backends.common import ENGINE_DTYPES, cpu_kv_blocks, on_cpu
from llenergymeasure.config.backends import PyTorchConfig
from llenergymeasure.config.experiment import ExperimentConfig


class TransformersServer(Server):
    def command(self, config: ExperimentConfig, model_path: str, port: int) -> list[str]:
        torch_cfg = config.backend_settings(PyTorchConfig)
        settings: dict[str, Any] = {
            "dtype": ENGINE_DTYPES[config.precision],
            "default_seed": config.seed,
            "device": torch_cfg.device,
            "attn_implementation": torch_cfg.attn_implementation,
        }
        if torch_cfg.torch_compile is not None:
            settings["compile"] = True
        cb_set = any(k.startswith("cb_") for k in config.passthrough_kwargs)
        cpu = torch_cfg.device == "cpu" or (torch_cfg.device == "auto" and on_cpu())
        if cpu and not cb_set:
            # its default sizes the cache from free memory: 14 GB for the built-in model
            dtype_bytes = 4 if config.precision == "fp32" else 2
            settings["cb_num_blocks"] = cpu_kv_blocks(model_path, dtype_bytes)
        return [
            str(Path(sys.executable).parent / "transformers"),
            "serve",
            "--continuous-batching",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *cli_flags(settings | config.passthrough_kwargs),
            model_path,
        ]
