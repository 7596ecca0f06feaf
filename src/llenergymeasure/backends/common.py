"""Shared by the backends whose engine runs the model in processes of its own (vLLM,
TensorRT-LLM): what the worker cannot ask the model directly (tokenizer, model shape, GPUs) is
read from the checkpoint instead."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from llenergymeasure.backends.base import ModelShape, PreparedBatch
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.errors import BackendError
from llenergymeasure.models import resolve_model

ENGINE_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""The config's precision as the dtype string vLLM's and TensorRT-LLM's LLM take."""


def model_path(model: str) -> str:
    """The model as an engine takes it: a built-in model's directory, else unchanged."""
    path = resolve_model(model)
    if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().is_dir():
        raise BackendError(f"model directory {path} does not exist")
    return path


def load_tokenizer(path: str) -> Any:
    """The Hugging Face tokenizer the PyTorch backend also uses, so that every backend is fed
    the same token ids for the same prompt."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise BackendError(f"could not load the tokenizer of '{path}': {e}") from e
    return tokenizer


def sampling_kwargs(config: ExperimentConfig, greedy: dict[str, Any]) -> dict[str, Any]:
    """The decoding settings as vLLM's and TensorRT-LLM's SamplingParams both take them;
    greedy: how the engine spells greedy decoding (vLLM temperature 0, TensorRT-LLM top_k 1)."""
    decoding = config.decoding
    kwargs: dict[str, Any] = {
        "max_tokens": config.max_output_tokens,
        "ignore_eos": decoding.ignore_eos,
        "repetition_penalty": decoding.repetition_penalty,
    }
    if decoding.min_output_tokens is not None:
        kwargs["min_tokens"] = decoding.min_output_tokens
    if decoding.strategy == "sampling":
        return kwargs | {
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "top_k": decoding.top_k,
        }
    return kwargs | greedy


def prompt_token_ids(tokenizer: Any, prompts: list[str], max_input_tokens: int) -> list[list[int]]:
    """Token ids per prompt, truncated to max_input_tokens as the PyTorch backend does."""
    encoded = tokenizer(prompts, truncation=True, max_length=max_input_tokens)
    return [list(ids) for ids in encoded["input_ids"]]


def token_id_batches(
    tokenizer: Any, prompts: list[str], max_input_tokens: int, batch_size: int
) -> list[PreparedBatch]:
    """Batches of token-id prompts as vLLM's and TensorRT-LLM's LLM.generate take them; shape
    (rows, longest prompt)."""
    ids = prompt_token_ids(tokenizer, prompts, max_input_tokens)
    batches = []
    for start in range(0, len(ids), batch_size):
        rows = ids[start : start + batch_size]
        inputs = [{"prompt_token_ids": r} for r in rows]
        batches.append(PreparedBatch((len(rows), max(len(r) for r in rows)), inputs))
    return batches


def checkpoint_shape(path: str) -> ModelShape | None:
    """Parameter and layer counts from config.json and the safetensors headers of a local
    checkpoint; None for a hub id or a checkpoint without them."""
    directory = Path(path).expanduser()
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        total = sum(_safetensors_params(f) for f in sorted(directory.glob("*.safetensors")))
    except (OSError, ValueError, struct.error):
        return None
    layers, heads = config.get("num_hidden_layers"), config.get("num_attention_heads")
    hidden, vocab = config.get("hidden_size"), config.get("vocab_size")
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    if not (total and layers and heads and head_dim and hidden and vocab):
        return None
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return ModelShape(total, total - embeddings, int(layers), int(heads) * int(head_dim))


CPU_KV_SHARE = 0.10
"""On a CPU a server's KV cache gets this share of the host's available memory (the engines'
own default, a share of all memory, starves or kills a shared host)."""
CPU_KV_BLOCKS = (4, 256)
"""transformers serve's blocks (256 tokens of every layer) on a CPU: at least, at most."""


def on_cpu() -> bool:
    """No NVIDIA GPU for a server: CUDA sees none, or the host has no driver device node."""
    return os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not Path("/dev/nvidiactl").exists()


def host_memory_bytes() -> tuple[int, int]:
    """(available, total) host memory, from /proc/meminfo; (0, 1) where it cannot be read."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        info = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines)}
        return info["MemAvailable"], info["MemTotal"]
    except (OSError, ValueError, KeyError):
        return 0, 1


def cpu_kv_blocks(path: str, dtype_bytes: int) -> int:
    """KV-cache blocks for transformers serve on a CPU: CPU_KV_SHARE of available memory over
    one block's bytes (from config.json), within CPU_KV_BLOCKS (the least without either)."""
    low, high = CPU_KV_BLOCKS
    try:
        config = json.loads((Path(path).expanduser() / "config.json").read_text(encoding="utf-8"))
        heads = config.get("num_key_value_heads") or config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        block = 256 * 2 * config["num_hidden_layers"] * heads * head_dim * dtype_bytes
    except (OSError, ValueError, KeyError, TypeError):
        return low
    return max(low, min(high, int(CPU_KV_SHARE * host_memory_bytes()[0] // block)))


def cpu_memory_share() -> float:
    """vLLM's gpu_memory_utilization on a CPU (a share of host memory): CPU_KV_SHARE of what
    is available now, at least 1 %."""
    available, total = host_memory_bytes()
    return max(0.01, round(CPU_KV_SHARE * available / total, 2))


def _safetensors_params(path: Path) -> int:
    """Elements of every tensor in one safetensors file, from its JSON header alone."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
