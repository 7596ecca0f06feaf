"""The shipped ``builtin:tiny-llama`` loads offline with plain transformers and generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.datasets import builtin_prompts, synthetic_prompts
from llenergymeasure.models import resolve_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_model("builtin:tiny-llama")


@pytest.fixture(scope="module")
def tokenizer(model_dir: str) -> Any:
    return transformers.AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir: str) -> Any:
    m = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    m.eval()
    return m


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_files_small_and_present(model_dir: str) -> None:
    files = {p.name: p.stat().st_size for p in Path(model_dir).iterdir() if p.is_file()}
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert name in files, name
    assert sum(files.values()) < 3_000_000


def test_architecture(model: Any) -> None:
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert cfg.hidden_size == 128
    assert cfg.num_attention_heads == 2
    assert cfg.num_key_value_heads == 2
    assert cfg.num_hidden_layers == 2
    assert cfg.intermediate_size == 256
    assert cfg.vocab_size == 512
    assert cfg.max_position_embeddings == 2048
    assert cfg.head_dim == 64
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (128, 128)
    assert cfg.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert next(model.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 393_856


def test_weights_are_random_not_degenerate(model: Any) -> None:
    w = model.model.embed_tokens.weight.detach()
    assert 0.015 < float(w.std()) < 0.025
    assert abs(float(w.mean())) < 0.005


def test_tokenizer(tokenizer: Any, model: Any) -> None:
    assert tokenizer.is_fast
    assert len(tokenizer) == 512
    assert tokenizer.model_max_length == 2048
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.bos_token == "<s>"
    assert tokenizer.eos_token == "</s>"
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert len(ids) == 3
    assert (
        tokenizer.bos_token_id == model.config.bos_token_id == model.generation_config.bos_token_id
    )
    assert (
        tokenizer.eos_token_id == model.config.eos_token_id == model.generation_config.eos_token_id
    )
    assert (
        tokenizer.pad_token_id == model.config.pad_token_id == model.generation_config.pad_token_id
    )


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "  leading and trailing spaces  ",
        "Line one\nline two\ttabbed, digits 0123456789 and symbols {}[]()<>@#$%^&*",
        "Unicode: café, naïve, 日本語, emoji 🙂",
        *builtin_prompts()[:8],
    ],
)
def test_tokenizer_round_trips(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    with_special = tokenizer.encode(text)
    assert with_special[0] == tokenizer.bos_token_id
    assert tokenizer.decode(with_special, skip_special_tokens=True) == text


def test_tokenizer_is_reasonably_efficient_on_builtin_prompts(tokenizer: Any) -> None:
    prompts = builtin_prompts()
    chars = sum(len(p) for p in prompts)
    tokens = sum(len(tokenizer.encode(p, add_special_tokens=False)) for p in prompts)
    assert chars / tokens > 2.0  # trained merges, not raw bytes


def test_padded_batch_generates_exact_new_tokens(tokenizer: Any, model: Any) -> None:
    tokenizer.padding_side = "left"
    prompts = ["Hi", builtin_prompts()[0], builtin_prompts()[5]]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert len(set(lengths)) == 3  # really padded
    assert (batch["input_ids"][0, : -lengths[0]] == tokenizer.pad_token_id).all()
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    new = out[:, batch["input_ids"].shape[1] :]
    assert new.shape == (3, 16)
    assert not (new == tokenizer.eos_token_id).any()


def test_padded_batch_matches_unpadded(tokenizer: Any, model: Any) -> None:
    """Left padding must not change what a prompt generates (attention mask works)."""
    tokenizer.padding_side = "left"
    prompts = [builtin_prompts()[1], "Short prompt"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        single = tokenizer(prompts[1:], return_tensors="pt")
        alone = model.generate(**single, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert out[1, -8:].tolist() == alone[0, -8:].tolist()


def test_synthetic_prompts_feed_the_model(tokenizer: Any, model: Any) -> None:
    prompts = synthetic_prompts(tokenizer, n=4, input_tokens=32, seed=0)
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert batch["input_ids"].shape == (4, 33)  # + <s>
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (4, 37)


def test_config_json_readable_by_transformers_4_and_5(model_dir: str) -> None:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32"
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"]
    assert cfg["architectures"] == ["LlamaForCausalLM"]
