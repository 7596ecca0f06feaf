"""Prompt sources: the built-in prompt set, user JSONL files and synthetic fixed-length prompts.

No torch/transformers imports here: :func:`synthetic_prompts` takes an already loaded tokenizer.
"""

from __future__ import annotations

import json
import math
import random
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from llenergymeasure.config.loader import MAX_PROMPT_FILE_BYTES, check_regular_file
from llenergymeasure.errors import ConfigError

_BUILTIN_FILE = "builtin_prompts.jsonl"
_EXPECTED = 'one JSON object per line like {"prompt": "..."}'

# Bounds for the synthetic prompt search (per prompt).
_MAX_ADJUST_STEPS = 32
_MAX_ATTEMPTS = 64

# Plain, common English words; synthetic prompts are random sequences of these.
_WORD_TEXT = """
    the of and to in is was for on are with as be at by this have from or one had not but what
    all were when we there can an your which their said if do will each about how up out them
    then she many some so these would other into has more her two like him see time could no
    make than first been its who now people my made over did down only way find use may water
    long little very after words called just where most know get through back much before go
    good new write our used me man too any day same right look think also around another came
    come work three word must because does part even place well such here take why things help
    put years different away again off went old number great tell men say small every found
    still between name should home big give air line set own under read last never us left end
    along while might next sound below saw something thought both few those always looked show
    large often together asked house world going want school important until form food keep
    children feet land side without boy once animals life enough took sometimes four head above
    kind began almost live page got earth need far hand high year mother light parts country
    father let night following picture being study second eyes soon times story boys since
    white days ever paper hard near sentence better best across during today others sure means
    knew energy power model token engine measure river garden window music table question
    answer simple careful quiet bright heavy early later quickly slowly carefully open close
    build explain summary compare list review plan system data value result method process
"""
_WORDS: tuple[str, ...] = tuple(dict.fromkeys(_WORD_TEXT.split()))


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that :func:`synthetic_prompts` uses."""

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def decode(self, token_ids: list[int], **kwargs: Any) -> str: ...


def _parse_jsonl(text: str, source: str) -> list[str]:
    prompts: list[str] = []
    # split on "\n" only: str.splitlines() would also split on U+2028 etc., which JSON allows
    # unescaped inside strings; a trailing "\r" is JSON whitespace.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{source}, line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: invalid JSON ({e.msg}); expected {_EXPECTED}") from e
        if not isinstance(obj, dict):
            raise ConfigError(
                f"{where}: expected a JSON object, got {type(obj).__name__}; expected {_EXPECTED}"
            )
        if "prompt" not in obj:
            raise ConfigError(f'{where}: missing "prompt" key; expected {_EXPECTED}')
        prompt = obj["prompt"]
        if not isinstance(prompt, str):
            raise ConfigError(
                f'{where}: "prompt" must be a string, got {type(prompt).__name__}; '
                f"expected {_EXPECTED}"
            )
        if not prompt.strip():
            raise ConfigError(f'{where}: "prompt" is empty; expected a non-empty string')
        prompts.append(prompt)
    if not prompts:
        raise ConfigError(f"{source}: contains no prompts; expected {_EXPECTED}")
    return prompts


def read_jsonl(path: Path) -> list[str]:
    """Read prompts from a JSONL file with one ``{"prompt": "..."}`` object per line.

    Blank lines are skipped; other keys on a line are ignored.

    Raises:
        ConfigError: the file is missing, unreadable, empty, or a line is malformed (the message
            names the file and the line number).
    """
    path = Path(path)
    check_regular_file(path, "prompt file", MAX_PROMPT_FILE_BYTES, "a JSONL file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompt file {path} is not valid UTF-8: {e}") from e
    except OSError as e:
        raise ConfigError(f"cannot read prompt file {path}: {e.strerror or e}") from e
    return _parse_jsonl(text, str(path))


@lru_cache(maxsize=1)
def _builtin_prompts() -> tuple[str, ...]:
    resource = resources.files(__name__).joinpath(_BUILTIN_FILE)
    return tuple(_parse_jsonl(resource.read_text(encoding="utf-8"), f"<builtin>/{_BUILTIN_FILE}"))


def builtin_prompts() -> list[str]:
    """The 64 prompts shipped with the package, in file order (a fresh list each call)."""
    return list(_builtin_prompts())


def _random_text(rng: random.Random, n_words: int) -> list[str]:
    return [rng.choice(_WORDS) for _ in range(n_words)]


def _fit_to_length(tokenizer: Tokenizer, text: str, target: int) -> str | None:
    """Cut ``text`` to a string that re-encodes to exactly ``target`` tokens, or None."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    cut = target
    tried: set[int] = set()
    for _ in range(_MAX_ADJUST_STEPS):
        if cut < 1 or cut > len(ids) or cut in tried:
            return None
        tried.add(cut)
        candidate = tokenizer.decode(
            ids[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        n = len(tokenizer.encode(candidate, add_special_tokens=False))
        if n == target:
            return candidate
        cut += target - n
    return None


def sized_prompt(tokenizer: Tokenizer, text: str, target: int) -> str:
    """``text`` repeated and cut to ``target`` tokens (a trace's lengths from a prompt source's
    words): exactly, unless no cut re-encodes to that many, then the plain cut."""
    reps = target // max(1, len(tokenizer.encode(text, add_special_tokens=False))) + 2
    long = " ".join([text] * reps)
    ids = tokenizer.encode(long, add_special_tokens=False)[:target]
    return _fit_to_length(tokenizer, long, target) or tokenizer.decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )


def _one_prompt(tokenizer: Tokenizer, rng: random.Random, target: int) -> str | None:
    # Grow the text until it has a few tokens more than needed (so the cut does not land on the
    # very end), estimating the words still missing from the tokens-per-word ratio so far.
    needed = target + 2
    words = _random_text(rng, max(1, target // 4))
    for _ in range(_MAX_ADJUST_STEPS):
        n = len(tokenizer.encode(" ".join(words), add_special_tokens=False))
        if n >= needed:
            return _fit_to_length(tokenizer, " ".join(words), target)
        per_word = max(n / len(words), 0.5)
        words += _random_text(rng, math.ceil((needed - n) / per_word) + 1)
    return None


def synthetic_prompts(tokenizer: Tokenizer, n: int, input_tokens: int, seed: int) -> list[str]:
    """``n`` prompts of exactly ``input_tokens`` tokens each under ``tokenizer``.

    Tokens are counted with ``add_special_tokens=False`` (a BOS token the engine adds is not
    counted). Prompts are random sequences of common English words drawn with
    ``random.Random(seed)``: the same tokenizer and seed give the same prompts, and prompts
    differ from each other whenever the length allows it.

    Raises:
        ConfigError: ``n`` or ``input_tokens`` is not positive, or no text of exactly
            ``input_tokens`` tokens could be built with this tokenizer.
    """
    if n < 1:
        raise ConfigError(f"number of synthetic prompts must be at least 1, got {n}")
    if input_tokens < 1:
        raise ConfigError(f"synthetic prompt length must be at least 1 token, got {input_tokens}")
    rng = random.Random(seed)
    prompts: list[str] = []
    seen: set[str] = set()
    for _ in range(n):
        prompt = _new_prompt(tokenizer, rng, input_tokens, seen)
        prompts.append(prompt)
        seen.add(prompt)
    return prompts


def _new_prompt(tokenizer: Tokenizer, rng: random.Random, target: int, seen: set[str]) -> str:
    fallback: str | None = None
    for _ in range(_MAX_ATTEMPTS):
        prompt = _one_prompt(tokenizer, rng, target)
        if prompt is None:
            continue
        if prompt not in seen:
            return prompt
        fallback = prompt  # valid but a duplicate: used only if nothing new turns up
    if fallback is None:
        raise ConfigError(
            f"could not build a synthetic prompt of exactly {target} tokens "
            f"with this tokenizer after {_MAX_ATTEMPTS} attempts"
        )
    return fallback


__all__ = ["Tokenizer", "builtin_prompts", "read_jsonl", "sized_prompt", "synthetic_prompts"]
