"""PyTorch/transformers backend: `generate` with real batching and left padding.

Energy-relevant settings: precision, batch size, attention kernel, torch.compile, static KV
cache, bitsandbytes 4/8-bit quantisation (where installed), device_map over several GPUs, and
the decoding settings.
"""

from __future__ import annotations

import importlib.util
import inspect
import resource
import sys
import time
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from llenergymeasure.backends.base import (
    Backend,
    ModelShape,
    PeakMemory,
    PreparedBatch,
    RequestOutput,
)
from llenergymeasure.backends.common import model_path
from llenergymeasure.config.backends import PyTorchConfig
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.errors import BackendError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Optional packages some settings need: setting -> (import name, what to install).
NEEDS = {
    "flash_attention_2": ("flash_attn", "pip install flash-attn (CUDA GPUs only)"),
    "device_map": ("accelerate", "pip install accelerate"),
    "bitsandbytes": ("bitsandbytes", "pip install bitsandbytes"),
}


class PyTorchBackend(Backend):
    name = "pytorch"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self.settings: PyTorchConfig = config.backend_settings(PyTorchConfig)
        self.device = self._pick_device(self.settings.device, self.settings.decode is not None)
        self._model: PreTrainedModel | None = None
        self._tokenizer: Any = None
        self._caches: dict[int, Any] = {}
        """decode: cuda_graphs: the static KV cache of each batch size (rows)."""

    @staticmethod
    def _pick_device(choice: str, graphs: bool = False) -> torch.device:
        if choice == "cuda" and not torch.cuda.is_available():
            raise BackendError("pytorch.device is 'cuda' but torch sees no CUDA device")
        if graphs and not torch.cuda.is_available():
            raise BackendError("pytorch.decode: cuda_graphs needs a CUDA device; torch sees none")
        if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        return torch.device("cuda", torch.cuda.current_device())

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for from_pretrained; a setting whose package is missing is a
        BackendError saying what to install."""
        settings, quantization = self.settings, self.config.quantization
        kwargs: dict[str, Any] = {
            "dtype": DTYPES[self.config.precision],
            "attn_implementation": settings.attn_implementation,
        }
        if settings.attn_implementation == "flash_attention_2":
            _require("flash_attention_2", "pytorch.attn_implementation: flash_attention_2")
        if settings.device_map is not None:
            _require("device_map", f"pytorch.device_map: {settings.device_map}")
            kwargs["device_map"] = settings.device_map
        if quantization in ("bnb_4bit", "bnb_8bit"):
            _require("bitsandbytes", f"quantization: {quantization}")
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=quantization == "bnb_4bit",
                load_in_8bit=quantization == "bnb_8bit",
                bnb_4bit_compute_dtype=DTYPES[self.config.precision],
            )
        return kwargs | self.config.passthrough_kwargs

    def load(self) -> None:
        # Seeds python, numpy and torch (all devices): sampling runs repeat exactly.
        transformers.set_seed(self.config.seed)
        path = model_path(self.config.model)
        kwargs = self.load_kwargs()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError, TypeError, ImportError) as e:
            raise BackendError(f"could not load model '{self.config.model}': {e}") from e
        if tokenizer.pad_token is None:
            # Padding is needed for batches; EOS is the conventional stand-in.
            tokenizer.pad_token = tokenizer.eos_token
        if "device_map" not in kwargs and "quantization_config" not in kwargs:
            model.to(self.device)  # device_map and bitsandbytes place the weights themselves
        model.eval()
        if self.settings.torch_compile is not None:
            model.forward = torch.compile(model.forward, mode=self.settings.torch_compile)
        self._model, self._tokenizer = model, tokenizer

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise BackendError("tokenizer requested before the model was loaded")
        return self._tokenizer

    @property
    def model(self) -> PreTrainedModel:
        if self._model is None:
            raise BackendError("generate called before the model was loaded")
        return self._model

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for model.generate: decoding, length and KV-cache settings."""
        decoding = self.config.decoding
        n_new = self.config.max_output_tokens
        kwargs: dict[str, Any] = {
            "max_new_tokens": n_new,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": decoding.strategy == "sampling",
            "repetition_penalty": decoding.repetition_penalty,
        }
        if decoding.ignore_eos:
            kwargs["min_new_tokens"] = n_new
        elif decoding.min_output_tokens is not None:
            kwargs["min_new_tokens"] = decoding.min_output_tokens
        if self.settings.cache_implementation is not None:
            kwargs["cache_implementation"] = self.settings.cache_implementation
        if self.settings.decode == "cuda_graphs":
            # generate compiles the decode step of a static cache (prefill stays eager);
            # reduce-overhead captures it as CUDA graphs, replayed each step.
            kwargs["compile_config"] = transformers.CompileConfig(mode="reduce-overhead")
        if decoding.strategy == "sampling":
            kwargs |= {
                "temperature": decoding.temperature,
                "top_p": decoding.top_p,
                "top_k": decoding.top_k,
            }
        else:
            # Greedy: neutralise sampling defaults a model's generation_config may carry.
            kwargs |= {"temperature": None, "top_p": None, "top_k": None}
        return kwargs

    def prepare(self, prompts: list[str]) -> list[PreparedBatch]:
        """Tokenised, truncated, left-padded batches already on the model's device."""
        tokenizer, size = self.tokenizer, self.config.batch_size
        batches = []
        for start in range(0, len(prompts), size):
            encoded = tokenizer(
                prompts[start : start + size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.config.max_input_tokens,
            ).to(self.model.device)
            batches.append(PreparedBatch(tuple(encoded["input_ids"].shape), encoded))
        return batches

    def initialize(self) -> None:
        """One two-token generate on a one-token prompt: the first call's set-up (CUDA
        libraries' handles and workspaces, generation config, allocator pools) lands here,
        in the load phase, not in the warm-up of the workload's own shapes."""
        encoded = self.tokenizer(["a"], return_tensors="pt").to(self.model.device)
        kwargs = self.generate_kwargs() | {"max_new_tokens": 2, "min_new_tokens": None}
        kwargs["disable_compile"] = True  # decode: cuda_graphs compiles per shape, in warm-up
        with torch.inference_mode():
            self.model.generate(**encoded, **kwargs)
        self.synchronize()

    def run_batch(self, batch: PreparedBatch) -> list[RequestOutput]:
        encoded = batch.inputs
        eos_id = self.tokenizer.eos_token_id
        t0 = time.perf_counter()
        with torch.inference_mode():  # the cache's tensors are inference tensors: reset here
            kwargs = self.generate_kwargs() | self._static_cache(encoded["input_ids"].shape[0])
            generated = self.model.generate(**encoded, **kwargs)
        self.synchronize()
        latency_s = time.perf_counter() - t0
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        input_counts = encoded["attention_mask"].sum(dim=1).tolist()
        return [
            RequestOutput(int(n_in), _count_generated(row, eos_id), latency_s)
            for row, n_in in zip(new_tokens, input_counts, strict=True)
        ]

    def _static_cache(self, rows: int) -> dict[str, Any]:
        """decode: cuda_graphs: one static KV cache per batch size, long enough for every batch,
        emptied and reused by each generate. The captured graphs hold its addresses: a new
        cache per call (generate's own) re-records them every batch, at the host's pace."""
        if self.settings.decode != "cuda_graphs":
            return {}
        # transformers renamed generate's past_key_values to cache (5.2x); both still work
        name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else ""
        cache = reused_static_cache(self._caches, self.model, rows, self.config)
        return {name or "past_key_values": cache}

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def cuda_devices(self) -> list[int] | None:
        if self.settings.device_map is not None and self.device.type == "cuda":
            return None  # layers spread over the visible GPUs: measure all of them
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else 0]

    def model_shape(self) -> ModelShape | None:
        model = self.model
        cfg = model.config
        layers = getattr(cfg, "num_hidden_layers", None)
        heads = getattr(cfg, "num_attention_heads", None)
        head_dim = getattr(cfg, "head_dim", None) or (
            cfg.hidden_size // heads if heads and getattr(cfg, "hidden_size", None) else None
        )
        if not (layers and heads and head_dim):
            return None
        total = int(model.num_parameters())
        embeddings = int(model.get_input_embeddings().weight.numel())
        if not getattr(cfg, "tie_word_embeddings", False):
            output = model.get_output_embeddings()
            embeddings += int(output.weight.numel()) if output is not None else 0
        return ModelShape(total, total - embeddings, int(layers), int(heads) * int(head_dim))

    def device_description(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return "cpu"

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> PeakMemory | None:
        if self.device.type == "cuda":
            return PeakMemory(
                torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda_max_allocated"
            )
        # ru_maxrss: kilobytes on Linux, bytes on macOS; peak of the whole worker process.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return PeakMemory(rss / (2**20 if sys.platform == "darwin" else 2**10), "process_peak_rss")

    def library_versions(self) -> dict[str, str]:
        versions = {"torch": torch.__version__, "transformers": transformers.__version__}
        if torch.version.cuda:
            versions["cuda"] = torch.version.cuda
        return versions

    def engine_settings(self) -> dict[str, Any]:
        model = self.model
        quantization = getattr(model.config, "quantization_config", None)
        placement = getattr(model, "hf_device_map", None)
        return {
            "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "attn_implementation": model.config._attn_implementation,
            # set only when spread over devices; str values keep table columns one type
            "device_map": {k: str(v) for k, v in placement.items()} if placement else None,
            "weight_devices": sorted({str(p.device) for p in model.parameters()}),
            "torch_compile": self.settings.torch_compile,
            "cache_implementation": "static"
            if self.settings.decode
            else self.generate_kwargs().get("cache_implementation"),
            "decode": _decode_ran(model),
            "quantization": quantization.to_dict() if quantization is not None else None,
        }

    def close(self) -> None:
        self._model, self._tokenizer, self._caches = None, None, {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _count_generated(row: torch.Tensor, eos_id: int | None) -> int:
    """Tokens the request really produced: up to and including its first EOS (the rest is pad)."""
    if eos_id is None:
        return int(row.numel())
    hits = (row == eos_id).nonzero()
    return int(hits[0].item()) + 1 if hits.numel() else int(row.numel())


def reused_static_cache(
    caches: dict[int, Any], model: PreTrainedModel, rows: int, config: ExperimentConfig
) -> Any:
    """The static cache for `rows`, made on first use, emptied in place (addresses kept)."""
    cache = caches.get(rows)
    if cache is None:
        length = config.max_input_tokens + config.max_output_tokens
        cache = caches[rows] = transformers.StaticCache(config=model.config, max_cache_len=length)
    cache.reset()
    return cache


def _decode_ran(model: PreTrainedModel) -> str:
    """What decode ran as, not what was asked: generate keeps its compiled step on the model,
    and inductor counts the CUDA graphs it declined to capture."""
    if not hasattr(model, "_compiled_call"):
        return "eager"
    from torch._dynamo.utils import counters

    return "compiled_without_graphs" if counters["inductor"]["cudagraph_skips"] else "cuda_graphs"


def _require(package: str, setting: str) -> None:
    """BackendError naming what to install when `setting` needs a package that is missing."""
    module, hint = NEEDS[package]
    if importlib.util.find_spec(module) is None:
        raise BackendError(f"{setting} needs the {module} package, which is not installed: {hint}")
