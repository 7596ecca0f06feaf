"""The decoding settings the vLLM and TensorRT-LLM backends hand their engines (shared code
that runs without either engine installed)."""

from __future__ import annotations

from llenergymeasure.backends.common import sampling_kwargs
from llenergymeasure.config.experiment import ExperimentConfig


def test_greedy_uses_the_engine_spelling_and_no_sampling_knobs() -> None:
    config = ExperimentConfig.model_validate({"max_output_tokens": 7})
    kwargs = sampling_kwargs(config, greedy={"top_k": 1})
    assert kwargs == {
        "max_tokens": 7,
        "ignore_eos": config.decoding.ignore_eos,
        "repetition_penalty": config.decoding.repetition_penalty,
        "top_k": 1,
    }


def test_sampling_overrides_the_greedy_spelling() -> None:
    config = ExperimentConfig.model_validate(
        {
            "max_output_tokens": 9,
            "decoding": {
                "strategy": "sampling",
                "temperature": 0.7,
                "top_p": 0.9,
                "top_k": 40,
                "min_output_tokens": 3,
                "ignore_eos": False,
            },
        }
    )
    kwargs = sampling_kwargs(config, greedy={"temperature": 0.0})
    assert kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9 and kwargs["top_k"] == 40
    assert kwargs["min_tokens"] == 3 and kwargs["max_tokens"] == 9
    assert kwargs["ignore_eos"] is False
