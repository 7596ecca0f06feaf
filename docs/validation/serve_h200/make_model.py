"""A random-weight ~0.85B Llama (bf16) built from a config with the built-in model's tokenizer."""

import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

src = Path("src/llenergymeasure/models/tiny_llama")
out = Path(sys.argv[1])
cfg = json.loads((src / "config.json").read_text())
cfg.update(
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    dtype="bfloat16",
    tie_word_embeddings=False,
)
cfg.pop("architectures", None)
config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("model_type",)})
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(out)
for f in src.iterdir():
    if f.name.startswith(("tokenizer", "special_tokens")):
        shutil.copy(f, out / f.name)
print("params", sum(p.numel() for p in model.parameters()) / 1e9, "B", flush=True)
