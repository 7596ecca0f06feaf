"""Write a random-weight ~1B-parameter Llama (bf16) built from a config: no downloads.

    python tools/make_random_llama.py DIR      # prints the parameter count last

Used by the GPU validation and benchmarks. The tokenizer is the built-in tiny model's
(512 tokens, inside this model's 32,000-token vocabulary): outputs are meaningless, compute
and memory traffic per token are those of a real 1B Llama.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llenergymeasure.models import resolve_model


def make_llama_1b(path: Path) -> int:
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    tiny = Path(resolve_model("builtin:tiny-llama"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).write_bytes((tiny / name).read_bytes())
    return int(model.num_parameters())


if __name__ == "__main__":
    print(make_llama_1b(Path(sys.argv[1])))
