"""Pick the prompts an experiment serves, from the source its config names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llenergymeasure.config.experiment import ExperimentConfig, PromptSource
from llenergymeasure.errors import ConfigError


def prompt_file(source: PromptSource, base_dir: Path) -> Path:
    path = source.file(base_dir)
    assert path is not None
    return path


def fixed_prompts(source: PromptSource, base_dir: Path) -> list[str] | None:
    """Prompts of a builtin or JSONL source (no tokenizer needed); None for synthetic."""
    from llenergymeasure.datasets import builtin_prompts, read_jsonl

    if source.source == "builtin":
        return builtin_prompts()
    if source.source == "jsonl":
        return read_jsonl(prompt_file(source, base_dir))
    return None


def check_available(config: ExperimentConfig, base_dir: Path) -> None:
    """Fail before anything runs if the source cannot supply n_prompts (host-side pre-flight)."""
    prompts = fixed_prompts(config.prompts, base_dir)
    if prompts is not None and len(prompts) < config.n_prompts:
        where = (
            f"the built-in set ({len(prompts)} prompts)"
            if config.prompts.source == "builtin"
            else f"{prompt_file(config.prompts, base_dir)} ({len(prompts)} prompts)"
        )
        raise ConfigError(
            f"n_prompts is {config.n_prompts} but {where} has fewer; lower n_prompts, "
            "use a larger JSONL file, or `prompts: {source: synthetic, input_tokens: N}`"
        )


def select_prompts(config: ExperimentConfig, base_dir: Path, tokenizer: Any) -> list[str]:
    """The first n_prompts prompts of the source (synthetic ones are seeded by config.seed)."""
    from llenergymeasure.datasets import synthetic_prompts

    check_available(config, base_dir)
    prompts = fixed_prompts(config.prompts, base_dir)
    if prompts is None:
        assert config.prompts.input_tokens is not None
        return synthetic_prompts(
            tokenizer, config.n_prompts, config.prompts.input_tokens, config.seed
        )
    return prompts[: config.n_prompts]
