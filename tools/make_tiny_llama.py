"""Generate the built-in ``builtin:tiny-llama`` model shipped inside the package.

The model is a randomly initialised ``LlamaForCausalLM`` (about 0.4M parameters) with a
byte-level BPE tokenizer trained on the built-in prompt corpus. It exists so that the whole
measurement pipeline can be exercised offline, on CPU, without downloading anything. Its
output is gibberish by design.

Everything is deterministic: the tokenizer is trained on a fixed corpus and the weights are
drawn from a seeded generator, so re-running the script reproduces the same files.

Usage::

    python tools/make_tiny_llama.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "llenergymeasure" / "models" / "tiny_llama"
PROMPTS_FILE = REPO_ROOT / "src" / "llenergymeasure" / "datasets" / "builtin_prompts.jsonl"

SEED = 0
OUTPUT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)
VOCAB_SIZE = 512
MODEL_MAX_LENGTH = 2048

# Special tokens: ids follow the Llama convention (unk 0, bos 1, eos 2) plus a pad token.
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD]
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3

MODEL_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    # 128 / 2 = 64; stated explicitly because vLLM's CPU attention rejects smaller head sizes.
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": MODEL_MAX_LENGTH,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-06,
    "use_cache": True,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "pretraining_tp": 1,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "pad_token_id": PAD_ID,
    # Both spellings so that transformers 4.x (used by some engines) and 5.x read the same thing.
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "torch_dtype": "float32",
    "dtype": "float32",
}

GENERATION_CONFIG: dict[str, Any] = {
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "pad_token_id": PAD_ID,
    "do_sample": False,
}

TOKENIZER_CONFIG: dict[str, Any] = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": BOS,
    "eos_token": EOS,
    "pad_token": PAD,
    "unk_token": UNK,
    "add_bos_token": True,
    "add_eos_token": False,
    "model_max_length": MODEL_MAX_LENGTH,
    "padding_side": "left",
    "clean_up_tokenization_spaces": False,
    "model_input_names": ["input_ids", "attention_mask"],
}

SPECIAL_TOKENS_MAP: dict[str, str] = {
    "bos_token": BOS,
    "eos_token": EOS,
    "pad_token": PAD,
    "unk_token": UNK,
}

# A short fixed English text, added to the prompt corpus so the merges cover common words,
# digits and punctuation beyond what the prompts happen to contain.
EXTRA_TEXT = """\
The quick brown fox jumps over the lazy dog. A small model can still be useful for testing.
Energy is measured in joules; power is measured in watts. One watt is one joule per second.
Throughput is the number of tokens generated per second, and latency is the time a user waits.
Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64, 128, 256, 512, 1024 and 2048
appear often in computing. Dates look like 2024-05-17, times like 12:30, and prices like $4.99.
Please answer the question, write the code, explain the idea, summarise the text, or list the
steps. What, why, how, when, where and who are common question words. It is, they are, we were.
"Quoted text", (brackets), [lists], {braces}, a/b, x = y + z * 2, and e-mail@example.com.
In the beginning there was a simple idea: measure first, then optimise what the numbers show.
The people of the town worked in the fields during the day and told stories in the evening.
"""


def load_corpus() -> list[str]:
    prompts = [
        json.loads(line)["prompt"]
        for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return prompts + EXTRA_TEXT.splitlines()


def build_tokenizer(corpus: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    for token, expected in zip(SPECIAL_TOKENS, (UNK_ID, BOS_ID, EOS_ID, PAD_ID), strict=True):
        actual = tok.token_to_id(token)
        if actual != expected:
            raise RuntimeError(f"special token {token!r} got id {actual}, expected {expected}")
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(f"vocab size {tok.get_vocab_size()} != {VOCAB_SIZE}")
    # Prepend <s> like Llama tokenizers do (only when add_special_tokens=True).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, BOS_ID)],
    )
    return tok


def build_weights() -> dict[str, Any]:
    import torch

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    std = float(MODEL_CONFIG["initializer_range"])
    h = int(MODEL_CONFIG["hidden_size"])
    inter = int(MODEL_CONFIG["intermediate_size"])
    n_heads = int(MODEL_CONFIG["num_attention_heads"])
    n_kv = int(MODEL_CONFIG["num_key_value_heads"])
    hd = int(MODEL_CONFIG["head_dim"])

    def normal(*shape: int) -> torch.Tensor:
        return torch.normal(0.0, std, size=shape, generator=gen, dtype=torch.float32)

    # Explicit shapes (HF Linear weights are [out_features, in_features]); drawn in a fixed order.
    weights: dict[str, torch.Tensor] = {"model.embed_tokens.weight": normal(VOCAB_SIZE, h)}
    for i in range(int(MODEL_CONFIG["num_hidden_layers"])):
        p = f"model.layers.{i}."
        weights[p + "self_attn.q_proj.weight"] = normal(n_heads * hd, h)
        weights[p + "self_attn.k_proj.weight"] = normal(n_kv * hd, h)
        weights[p + "self_attn.v_proj.weight"] = normal(n_kv * hd, h)
        weights[p + "self_attn.o_proj.weight"] = normal(h, n_heads * hd)
        weights[p + "mlp.gate_proj.weight"] = normal(inter, h)
        weights[p + "mlp.up_proj.weight"] = normal(inter, h)
        weights[p + "mlp.down_proj.weight"] = normal(h, inter)
        weights[p + "input_layernorm.weight"] = torch.ones(h, dtype=torch.float32)
        weights[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.float32)
    weights["model.norm.weight"] = torch.ones(h, dtype=torch.float32)
    # lm_head.weight is tied to model.embed_tokens.weight and therefore not stored.
    return weights


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    tok = build_tokenizer(load_corpus())
    tok.save(str(out / "tokenizer.json"), pretty=True)
    write_json(out / "tokenizer_config.json", TOKENIZER_CONFIG)
    write_json(out / "special_tokens_map.json", SPECIAL_TOKENS_MAP)
    write_json(out / "config.json", MODEL_CONFIG)
    write_json(out / "generation_config.json", GENERATION_CONFIG)
    weights = build_weights()
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    total = 0
    for name in OUTPUT_FILES:
        (out / name).chmod(0o644)  # safetensors creates 0600 files; these ship in the wheel
        total += (out / name).stat().st_size

    n_params = sum(t.numel() for t in weights.values())
    print(f"wrote {out} ({n_params:,} parameters, {total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
