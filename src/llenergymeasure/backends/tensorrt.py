"""TensorRT-LLM backend: the TensorRT engine path of the LLM API, with a cache of built engines.

Written against TensorRT-LLM 1.x as its sources document it, and NOT run on a real engine by
this project yet (it needs an NVIDIA GPU): `tensorrt_llm._tensorrt_engine.LLM` takes a
BuildConfig (max_batch_size, max_num_tokens, max_seq_len), a QuantConfig (weight and KV-cache
quantisation), a KvCacheConfig and tensor/pipeline-parallel sizes, builds an engine and can
`save()` it; `LLM(model=<engine dir>)` loads a saved one. (In 1.x plain `tensorrt_llm.LLM` is
the PyTorch-backed engine, which has no build step.)

Built engines are cached under engine_cache_root(), keyed by everything that shapes the
engine (engine_key), so repeated experiments load instead of rebuilding. The library is imported
on first use: this module, and the cache logic, import without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from llenergymeasure.config.backends import TENSORRT, TensorRTConfig
from llenergymeasure.config.experiment import ExperimentConfig, config_hash
from llenergymeasure.errors import BackendError

QUANT_ALGOS = {
    "fp8": "FP8",
    "awq": "W4A16_AWQ",
    "gptq": "W4A16_GPTQ",
    "int8_weight_only": "W8A16",
    "int4_weight_only": "W4A16",
}
KV_CACHE_QUANT_ALGOS = {"fp8": "FP8", "int8": "INT8"}
ENGINE_CACHE_ENV = "LEM_TRT_ENGINE_CACHE"
KEY_FILE = "lem-engine-key.json"
"""Written into an engine directory last, before it is moved into place: marks it complete."""


@dataclass(frozen=True)
class BuildLimits:
    """The engine's build-time limits: what the config says, else what the experiment needs."""

    max_batch_size: int
    max_seq_len: int
    max_num_tokens: int | None

    @classmethod
    def of(cls, config: ExperimentConfig) -> BuildLimits:
        settings = config.backend_settings(TensorRTConfig)
        needed = config.max_input_tokens + config.max_output_tokens
        max_seq_len = settings.max_seq_len or needed
        if max_seq_len < needed:
            raise BackendError(
                f"tensorrt.max_seq_len is {max_seq_len} but max_input_tokens + max_output_tokens "
                f"is {needed}: raise max_seq_len or shorten the requests"
            )
        return cls(
            settings.max_batch_size or config.batch_size, max_seq_len, settings.max_num_tokens
        )


def engine_key(
    config: ExperimentConfig, model: str, library_version: str, gpus: list[str]
) -> dict[str, Any]:
    """Everything that decides what engine gets built: model (and its files), precision,
    quantisation, tp x pp, the build limits, the GPU model and the library version (an engine
    only loads in the version, and on the GPU architecture, that built it)."""
    settings = config.backend_settings(TensorRTConfig)
    limits = BuildLimits.of(config)
    return {
        "model": model,
        "model_files": _model_fingerprint(model),
        "precision": config.precision,
        "quantization": config.quantization,
        "kv_cache_dtype": settings.kv_cache_dtype,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size,
        "max_batch_size": limits.max_batch_size,
        "max_seq_len": limits.max_seq_len,
        "max_num_tokens": limits.max_num_tokens,
        "passthrough_kwargs": config.passthrough_kwargs,
        "gpus": gpus,
        "tensorrt_llm": library_version,
    }


def engine_cache_root() -> Path:
    """$LEM_TRT_ENGINE_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/llenergymeasure/
    tensorrt-engines."""
    explicit = os.environ.get(ENGINE_CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llenergymeasure" / "tensorrt-engines"


def engine_dir_for(key: dict[str, Any]) -> Path:
    return engine_cache_root() / config_hash(key)[:20]


def _model_fingerprint(model: str) -> str | None:
    """Names and sizes of a local checkpoint's files, so replacing the weights at the same path
    builds a new engine; None for a hub id (its revision is the hub's business)."""
    directory = Path(model).expanduser()
    if not directory.is_dir():
        return None
    files = sorted((p.name, p.stat().st_size) for p in directory.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def _trtllm() -> Any:
    """The tensorrt_llm package, imported on first use; a BackendError naming what to install
    where it is missing."""
    try:
        import tensorrt_llm
        import tensorrt_llm._tensorrt_engine
        import tensorrt_llm.llmapi
    except ImportError as e:
        raise BackendError(
            f"backend 'tensorrt' needs TensorRT-LLM, which is not installed ({e.name or e}); "
            f"install it with: {TENSORRT.install}"
        ) from e
    return tensorrt_llm


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self.settings: TensorRTConfig = config.backend_settings(TensorRTConfig)
        self._llm: Any = None
        self._tokenizer: Any = None
        self._path = ""
        self._engine_dir: Path | None = None
        self._cache_hit = False
        self._trt: Any = None

    @property
    def world_size(self) -> int:
        return self.settings.tensor_parallel_size * self.settings.pipeline_parallel_size

    def runtime_kwargs(self) -> dict[str, Any]:
        """LLM keyword arguments shared by building an engine and loading a cached one."""
        trt, settings = self._trt, self.settings
        kv_cache: dict[str, Any] = {}
        if settings.kv_cache_free_gpu_memory_fraction is not None:
            kv_cache["free_gpu_memory_fraction"] = settings.kv_cache_free_gpu_memory_fraction
        if settings.enable_kv_cache_block_reuse is not None:
            kv_cache["enable_block_reuse"] = settings.enable_kv_cache_block_reuse
        limits = BuildLimits.of(self.config)
        kwargs: dict[str, Any] = {
            "tokenizer": self._path,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "pipeline_parallel_size": settings.pipeline_parallel_size,
            "kv_cache_config": trt.llmapi.KvCacheConfig(**kv_cache),
            # The LLM API's own defaults for these would override the engine's build limits.
            "max_batch_size": limits.max_batch_size,
            "max_seq_len": limits.max_seq_len,
        }
        if limits.max_num_tokens is not None:
            kwargs["max_num_tokens"] = limits.max_num_tokens
        if settings.enable_chunked_prefill is not None:
            kwargs["enable_chunked_prefill"] = settings.enable_chunked_prefill
        return kwargs | self.config.passthrough_kwargs

    def build_kwargs(self) -> dict[str, Any]:
        """The extra LLM keyword arguments that make it build an engine."""
        trt, config = self._trt, self.config
        limits = BuildLimits.of(config)
        build: dict[str, Any] = {
            "max_batch_size": limits.max_batch_size,
            "max_seq_len": limits.max_seq_len,
        }
        if limits.max_num_tokens is not None:
            build["max_num_tokens"] = limits.max_num_tokens
        algo = trt.llmapi.QuantAlgo
        quant: dict[str, Any] = {}
        if config.quantization is not None:
            quant["quant_algo"] = getattr(algo, QUANT_ALGOS[config.quantization])
        if self.settings.kv_cache_dtype != "auto":
            quant["kv_cache_quant_algo"] = getattr(
                algo, KV_CACHE_QUANT_ALGOS[self.settings.kv_cache_dtype]
            )
        return {
            "dtype": ENGINE_DTYPES[config.precision],
            "build_config": trt.BuildConfig(**build),
            "quant_config": trt.llmapi.QuantConfig(**quant),
        }

    def sampling_params(self) -> Any:
        """Decoding as TensorRT-LLM takes it (top_k 1 is its greedy), with per-request timing
        metrics switched on for TTFT and inter-token latency."""
        kwargs = sampling_kwargs(self.config, greedy={"top_k": 1})
        kwargs |= {"seed": self.config.seed, "return_perf_metrics": True}
        return self._trt.llmapi.SamplingParams(**kwargs)

    def load(self) -> None:
        self._trt = trt = _trtllm()
        self._path = model_path(self.config.model)
        self._tokenizer = load_tokenizer(self._path)
        gpus = _gpu_names(self.world_size)
        key = engine_key(self.config, self._path, trt.__version__, gpus)
        engine_dir = engine_dir_for(key)
        llm_cls = trt._tensorrt_engine.LLM
        try:
            if (engine_dir / KEY_FILE).is_file():
                self._llm = llm_cls(model=str(engine_dir), **self.runtime_kwargs())
                self._cache_hit = True
            else:
                self._llm = llm_cls(
                    model=self._path, **self.runtime_kwargs(), **self.build_kwargs()
                )
                _save_engine(self._llm, engine_dir, key)
        except (ValueError, RuntimeError, TypeError, OSError, AssertionError) as e:
            raise BackendError(
                f"TensorRT-LLM could not build or load an engine for '{self.config.model}': {e}"
            ) from e
        self._engine_dir = engine_dir

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise BackendError("tokenizer requested before the model was loaded")
        return self._tokenizer

    def prepare(self, prompts: list[str]) -> list[PreparedBatch]:
        return token_id_batches(
            self.tokenizer, prompts, self.config.max_input_tokens, self.config.batch_size
        )

    def run_batch(self, batch: PreparedBatch) -> list[RequestOutput]:
        """Submit one batch_size batch per LLM.generate call (in-flight batching inside)."""
        if self._llm is None:
            raise BackendError("generate called before the engine was built or loaded")
        t0 = time.perf_counter()
        served = self._llm.generate(batch.inputs, self.sampling_params(), use_tqdm=False)
        latency_s = time.perf_counter() - t0
        return [_request_output(r, latency_s) for r in served]

    def synchronize(self) -> None:
        """Nothing to wait for: LLM.generate returns once every request has finished."""

    def cuda_devices(self) -> list[int] | None:
        return list(range(self.world_size))  # ranks take the first visible devices in order

    def model_shape(self) -> ModelShape | None:
        return checkpoint_shape(self._path)

    def device_description(self) -> str:
        return f"cuda x{self.world_size} (TensorRT-LLM)"

    def reset_peak_memory(self) -> None:
        """Nothing to reset: see peak_memory."""

    def peak_memory(self) -> PeakMemory | None:
        """None: the engine's executor holds the device memory (the sampler's time series
        records it)."""
        return None

    def library_versions(self) -> dict[str, str]:
        import torch
        import transformers

        return {
            "tensorrt_llm": str(self._trt.__version__) if self._trt else "unknown",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }

    def engine_settings(self) -> dict[str, Any]:
        return {
            "engine_dir": str(self._engine_dir),
            "engine_cache": "hit" if self._cache_hit else "built",
            "build": json.loads((self._engine_dir / KEY_FILE).read_text(encoding="utf-8"))
            if self._engine_dir
            else None,
        }

    def close(self) -> None:
        llm, self._llm = self._llm, None
        self._tokenizer = None
        if llm is not None:
            llm.shutdown()  # stops the executor (and its MPI workers), freeing the GPUs


def _save_engine(llm: Any, engine_dir: Path, key: dict[str, Any]) -> None:
    """Save a freshly built engine into the cache: written beside, key file last, then moved
    into place, so a crash never leaves a directory that looks complete."""
    engine_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = engine_dir.with_name(f"{engine_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    llm.save(str(staging))
    (staging / KEY_FILE).write_text(json.dumps(key, indent=2, sort_keys=True), encoding="utf-8")
    try:
        staging.rename(engine_dir)
    except OSError:  # another worker cached the same engine meanwhile: keep theirs
        shutil.rmtree(staging, ignore_errors=True)


def _gpu_names(count: int) -> list[str]:
    """Model names of the first `count` visible GPUs (an engine is built for one GPU
    architecture); [] when fewer are visible."""
    import torch  # TensorRT-LLM's own dependency

    if not torch.cuda.is_available() or torch.cuda.device_count() < count:
        return []
    return [str(torch.cuda.get_device_name(i)) for i in range(count)]


def _request_output(served: Any, latency_s: float) -> RequestOutput:
    """One tensorrt_llm RequestOutput as the worker records it; TTFT and inter-token latency
    from the request's timing metrics (timedeltas on the executor's clock)."""
    completion = served.outputs[0]
    n_out = len(completion.token_ids)
    perf = getattr(completion, "request_perf_metrics", None)
    timing = getattr(perf, "timing_metrics", None)
    ttft_s = itl_s = None
    if timing is not None:
        first = timing.first_token_time.total_seconds()
        ttft_s = first - timing.arrival_time.total_seconds()
        if n_out > 1:
            itl_s = (timing.last_token_time.total_seconds() - first) / (n_out - 1)
    return RequestOutput(len(served.prompt_token_ids), n_out, latency_s, ttft_s, itl_s)
