"""Prompt sources: built-in set, JSONL reader, synthetic fixed-length prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.datasets import builtin_prompts, read_jsonl, synthetic_prompts
from llenergymeasure.errors import ConfigError
from llenergymeasure.models import BUILTIN_PREFIX, is_builtin, resolve_model

# ---------------------------------------------------------------------------- built-in prompts


def test_builtin_prompts_are_64_unique_non_empty() -> None:
    prompts = builtin_prompts()
    assert len(prompts) == 64
    assert len(set(prompts)) == 64
    for p in prompts:
        assert isinstance(p, str)
        assert p.strip() == p
        assert 10 <= len(p.split()) <= 60, p


def test_builtin_prompts_returns_fresh_list() -> None:
    a = builtin_prompts()
    a.clear()
    assert len(builtin_prompts()) == 64


def test_import_does_not_pull_torch_or_transformers() -> None:
    code = (
        "import sys, llenergymeasure.datasets, llenergymeasure.models\n"
        "bad = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---------------------------------------------------------------------------- read_jsonl


def write(tmp_path: Path, text: str, name: str = "prompts.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_jsonl_reads_prompts_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"prompt": "first"}\n\n   \n{"prompt": "second", "extra": 1}\n{"prompt": "third"}',
    )
    assert read_jsonl(path) == ["first", "second", "third"]


def test_read_jsonl_crlf_and_unicode_line_separator(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes('{"prompt": "a\u2028b"}\r\n{"prompt": "c"}\r\n'.encode())
    assert read_jsonl(path) == ["a\u2028b", "c"]


def test_read_jsonl_accepts_str_path_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_text('{"prompt": "hello"}\n', encoding="utf-8-sig")
    assert read_jsonl(str(path)) == ["hello"]  # type: ignore[arg-type]


def test_read_jsonl_round_trips_builtin_file(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(json.dumps({"prompt": p}) + "\n" for p in builtin_prompts()))
    assert read_jsonl(path) == builtin_prompts()


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"prompt": "unterminated}', "invalid JSON"),
        ("not json at all", "invalid JSON"),
        ('["a", "list"]', "expected a JSON object"),
        ('"just a string"', "expected a JSON object"),
        ('{"text": "wrong key"}', 'missing "prompt"'),
        ('{"prompt": 42}', '"prompt" must be a string'),
        ('{"prompt": null}', '"prompt" must be a string'),
        ('{"prompt": ""}', '"prompt" is empty'),
        ('{"prompt": "   "}', '"prompt" is empty'),
    ],
)
def test_read_jsonl_errors_name_path_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = write(tmp_path, '{"prompt": "ok one"}\n\n{"prompt": "ok two"}\n' + line + "\n")
    with pytest.raises(ConfigError) as exc:
        read_jsonl(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "line 4" in msg
    assert fragment in msg


def test_read_jsonl_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match="not found") as exc:
        read_jsonl(path)
    assert str(path) in str(exc.value)


def test_read_jsonl_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        read_jsonl(tmp_path)
    assert str(tmp_path) in str(exc.value)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_read_jsonl_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="no prompts") as exc:
        read_jsonl(path)
    assert str(path) in str(exc.value)


def test_read_jsonl_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(ConfigError) as exc:
        read_jsonl(path)
    assert str(path) in str(exc.value)


# ---------------------------------------------------------------------------- models


def test_resolve_builtin_tiny_llama() -> None:
    path = Path(resolve_model("builtin:tiny-llama"))
    assert path.is_absolute()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file(), name
    config = json.loads((path / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert config["head_dim"] == 64


def test_resolve_unknown_builtin_names_known_ones() -> None:
    with pytest.raises(ConfigError, match="builtin:tiny-llama") as exc:
        resolve_model("builtin:huge-llama")
    assert "builtin:huge-llama" in str(exc.value)
    with pytest.raises(ConfigError):
        resolve_model(BUILTIN_PREFIX)


@pytest.mark.parametrize("model", ["gpt2", "meta-llama/Llama-3.2-1B", "/some/local/dir", "./x"])
def test_resolve_passes_through_non_builtin(model: str) -> None:
    assert resolve_model(model) == model
    assert not is_builtin(model)


def test_is_builtin() -> None:
    assert is_builtin("builtin:tiny-llama")
    assert is_builtin("builtin:unknown")


# ---------------------------------------------------------------------------- synthetic prompts


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(resolve_model("builtin:tiny-llama"))


def n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


@pytest.mark.parametrize("length", [1, 2, 8, 32, 128, 1000])
def test_synthetic_prompts_exact_length(tokenizer: Any, length: int) -> None:
    prompts = synthetic_prompts(tokenizer, n=20, input_tokens=length, seed=0)
    assert len(prompts) == 20
    assert [n_tokens(tokenizer, p) for p in prompts] == [length] * 20


@pytest.mark.parametrize("length", [8, 32, 128])
def test_synthetic_prompts_unique(tokenizer: Any, length: int) -> None:
    prompts = synthetic_prompts(tokenizer, n=64, input_tokens=length, seed=7)
    assert len(set(prompts)) == 64


def test_synthetic_prompts_deterministic_per_seed(tokenizer: Any) -> None:
    a = synthetic_prompts(tokenizer, n=10, input_tokens=32, seed=123)
    b = synthetic_prompts(tokenizer, n=10, input_tokens=32, seed=123)
    c = synthetic_prompts(tokenizer, n=10, input_tokens=32, seed=124)
    assert a == b
    assert a != c
    assert not set(a) & set(c)


def test_synthetic_prompts_count_ignores_bos(tokenizer: Any) -> None:
    (prompt,) = synthetic_prompts(tokenizer, n=1, input_tokens=16, seed=0)
    ids = tokenizer.encode(prompt)  # with special tokens: <s> is prepended
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == 17


@pytest.mark.parametrize(("n", "length"), [(0, 8), (-1, 8), (4, 0), (4, -5)])
def test_synthetic_prompts_rejects_bad_sizes(tokenizer: Any, n: int, length: int) -> None:
    with pytest.raises(ConfigError):
        synthetic_prompts(tokenizer, n=n, input_tokens=length, seed=0)


class _UselessTokenizer:
    """Every text is one token: no text can have 5 tokens."""

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        return [0]

    def decode(self, token_ids: list[int], **kwargs: Any) -> str:
        return "x"


def test_synthetic_prompts_impossible_length_raises() -> None:
    with pytest.raises(ConfigError, match="exactly 5 tokens"):
        synthetic_prompts(_UselessTokenizer(), n=1, input_tokens=5, seed=0)
