"""PyTorch/transformers backend: `generate` with real batching and left padding."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from llenergymeasure.backends.base import Backend, PeakMemory, RequestOutput
from llenergymeasure.config.experiment import ExperimentConfig, PyTorchConfig
from llenergymeasure.errors import BackendError
from llenergymeasure.measure.flops import ModelShape
from llenergymeasure.models import resolve_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PyTorchBackend(Backend):
    name = "pytorch"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self.settings: PyTorchConfig = config.pytorch or PyTorchConfig()
        self.device = self._pick_device(self.settings.device)
        self._model: PreTrainedModel | None = None
        self._tokenizer: Any = None

    @staticmethod
    def _pick_device(choice: str) -> torch.device:
        if choice == "cuda" and not torch.cuda.is_available():
            raise BackendError("pytorch.device is 'cuda' but torch sees no CUDA device")
        if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        return torch.device("cuda", torch.cuda.current_device())

    def load(self) -> None:
        # Seeds python, numpy and torch (all devices): sampling runs repeat exactly.
        transformers.set_seed(self.config.seed)
        path = resolve_model(self.config.model)
        if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().is_dir():
            raise BackendError(f"model directory {path} does not exist")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
            model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=DTYPES[self.config.precision],
                attn_implementation=self.settings.attn_implementation,
                **self.config.passthrough_kwargs,
            )
        except (OSError, ValueError, TypeError) as e:
            raise BackendError(f"could not load model '{self.config.model}': {e}") from e
        if tokenizer.pad_token is None:
            # Padding is needed for batches; EOS is the conventional stand-in.
            tokenizer.pad_token = tokenizer.eos_token
        model.to(self.device)
        model.eval()
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

    def _generate_kwargs(self) -> dict[str, Any]:
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

    def generate(self, prompts: list[str]) -> list[RequestOutput]:
        model, tokenizer = self.model, self.tokenizer
        kwargs = self._generate_kwargs()
        eos_id = tokenizer.eos_token_id
        outputs: list[RequestOutput] = []
        batch_size = self.config.batch_size
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            t0 = time.perf_counter()
            encoded = tokenizer(
                batch,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.config.max_input_tokens,
            ).to(self.device)
            with torch.inference_mode():
                generated = model.generate(**encoded, **kwargs)
            self.synchronize()
            latency_s = time.perf_counter() - t0
            new_tokens = generated[:, encoded["input_ids"].shape[1] :]
            input_counts = encoded["attention_mask"].sum(dim=1).tolist()
            for row, n_in in zip(new_tokens, input_counts, strict=True):
                outputs.append(RequestOutput(int(n_in), _count_generated(row, eos_id), latency_s))
        return outputs

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def gpu_uuids(self) -> list[str] | None:
        if self.device.type != "cuda":
            return []
        uuid = getattr(torch.cuda.get_device_properties(self.device), "uuid", None)
        if uuid is None:
            return None
        text = str(uuid)
        return [text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"]

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

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _count_generated(row: torch.Tensor, eos_id: int | None) -> int:
    """Tokens the request really produced: up to and including its first EOS (the rest is pad)."""
    if eos_id is None:
        return int(row.numel())
    hits = (row == eos_id).nonzero()
    return int(hits[0].item()) + 1 if hits.numel() else int(row.numel())
