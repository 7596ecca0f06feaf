"""ExperimentConfig / CampaignConfig / PromptSource / DecodingConfig: validation and identity."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from llenergymeasure.config import (
    CampaignConfig,
    DecodingConfig,
    ExperimentConfig,
    PromptSource,
    PyTorchConfig,
    config_hash,
)
from llenergymeasure.config.campaign import StatisticsConfig
from llenergymeasure.config.experiment import WarmupConfig

# ------------------------------------------------------------------------------------ defaults


def test_experiment_defaults() -> None:
    c = ExperimentConfig()
    assert c.model == "builtin:tiny-llama"
    assert c.backend == "pytorch"
    assert c.prompts == PromptSource(source="builtin")
    assert c.n_prompts == 16
    assert c.max_input_tokens == 256
    assert c.max_output_tokens == 64
    assert c.precision == "fp32"
    assert c.batch_size == 1
    assert c.seed == 42
    assert c.warmup == WarmupConfig(runs=3, until_cv=None)
    assert (c.warmup.max_runs, c.warmup.window) == (20, 5)
    assert c.passthrough_kwargs == {}
    # the chosen backend's section is filled in, with its own defaults
    assert c.pytorch == PyTorchConfig()
    assert c.pytorch.attn_implementation == "sdpa"
    assert c.pytorch.device == "auto"
    assert c.pytorch.padding_side == "left"


def test_decoding_defaults_are_greedy_and_fixed_length() -> None:
    d = DecodingConfig()
    assert d.strategy == "greedy"
    assert (d.temperature, d.top_p, d.top_k, d.repetition_penalty) == (1.0, 1.0, 0, 1.0)
    assert d.ignore_eos is True
    assert ExperimentConfig().decoding == d


def test_prompt_source_defaults_to_builtin() -> None:
    p = PromptSource()
    assert (p.source, p.path, p.input_tokens) == ("builtin", None, None)


def test_campaign_defaults() -> None:
    c = CampaignConfig(name="demo")
    assert c.base == {}
    assert c.grid is None
    assert c.experiments is None
    assert c.cycles is None  # the caller's default: 3 from the CLI, 1 from the library
    assert c.order == "interleaved"
    assert c.order_seed is None
    assert c.gaps is None  # user settings, then Gaps() defaults
    assert c.thermal_floor_c is None
    assert c.statistics == StatisticsConfig()
    assert c.output_dir == "results"
    assert c.runner is None  # --runner, then .lem-config.yaml, then auto decide
    assert c.cold_start is False
    assert c.timeout_s == 3600.0


def test_configs_are_frozen() -> None:
    c = ExperimentConfig()
    with pytest.raises(ValidationError):
        c.batch_size = 8  # type: ignore[misc]
    with pytest.raises(ValidationError):
        c.decoding.temperature = 0.5  # type: ignore[misc]
    assert c.batch_size == 1


# ------------------------------------------------------------------------ extra keys forbidden


@pytest.mark.parametrize(
    ("model", "data", "key"),
    [
        (ExperimentConfig, {"batchsize": 4}, "batchsize"),
        (ExperimentConfig, {"sglang": {}}, "sglang"),
        (DecodingConfig, {"temprature": 0.5}, "temprature"),
        (PromptSource, {"file": "x.jsonl"}, "file"),
        (PyTorchConfig, {"flash": True}, "flash"),
        (CampaignConfig, {"name": "x", "gird": {"batch_size": [1]}}, "gird"),
    ],
)
def test_extra_keys_forbidden(model: Any, data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    errors = info.value.errors()
    assert [e["type"] for e in errors] == ["extra_forbidden"]
    assert errors[0]["loc"][-1] == key


def test_nested_extra_key_forbidden_through_experiment() -> None:
    with pytest.raises(ValidationError) as info:
        ExperimentConfig.model_validate({"pytorch": {"attn": "eager"}})
    assert info.value.errors()[0]["loc"] == ("pytorch", "attn")


# -------------------------------------------------------------------------------- range checks


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_prompts", 0),
        ("n_prompts", 1_000_001),
        ("max_input_tokens", 0),
        ("max_output_tokens", 0),
        ("max_output_tokens", -5),
        ("batch_size", 0),
        ("batch_size", 100_001),
        ("seed", -1),
        ("seed", 2**32),
        ("warmup", {"runs": -1}),
        ("warmup", {"runs": 1001}),
        ("warmup", {"until_cv": 0}),
        ("warmup", {"until_cv": 1.0}),
        ("warmup", {"until_cv": 0.05, "window": 1}),
        ("warmup", {"until_cv": 0.05, "max_runs": 0}),
        ("precision", "fp8"),
        ("precision", "FP16"),
        ("backend", "sglang"),
        ("model", ""),
        ("batch_size", 4.5),
        ("batch_size", "four"),
    ],
)
def test_experiment_rejects_out_of_range(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        ExperimentConfig.model_validate({field: value})
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_prompts", 1),
        ("n_prompts", 1_000_000),
        ("batch_size", 1),
        ("batch_size", 100_000),
        ("seed", 0),
        ("seed", 2**32 - 1),
        ("precision", "bf16"),
        ("precision", "fp16"),
    ],
)
def test_experiment_accepts_boundaries(field: str, value: Any) -> None:
    data = {field: value} | ({"n_prompts": value} if field == "batch_size" else {})
    assert getattr(ExperimentConfig.model_validate(data), field) == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("temperature", 10.5),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("top_k", -1),
        ("repetition_penalty", 0.0),
        ("strategy", "beam"),
    ],
)
def test_decoding_rejects_out_of_range(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        DecodingConfig.model_validate({"strategy": "sampling", field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_sampling_accepts_its_parameters_at_the_bounds() -> None:
    d = DecodingConfig(strategy="sampling", temperature=10.0, top_p=1.0, top_k=50)
    assert (d.temperature, d.top_p, d.top_k) == (10.0, 1.0, 50)
    d = DecodingConfig(strategy="sampling", temperature=0.01, top_p=0.01)
    assert (d.temperature, d.top_p) == (0.01, 0.01)


# ------------------------------------------------------------------- greedy + sampling params


@pytest.mark.parametrize(("field", "value"), [("temperature", 0.7), ("top_p", 0.9), ("top_k", 40)])
def test_greedy_rejects_sampling_parameters(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        DecodingConfig.model_validate({field: value})
    message = str(info.value)
    assert field in message
    assert "sampling" in message
    # the same setting is fine with sampling
    sampling = DecodingConfig.model_validate({"strategy": "sampling", field: value})
    assert getattr(sampling, field) == value


def test_greedy_names_every_sampling_parameter_it_ignores() -> None:
    with pytest.raises(ValidationError) as info:
        DecodingConfig(temperature=0.5, top_k=3)
    assert "temperature, top_k" in str(info.value)


def test_greedy_accepts_sampling_parameters_at_their_defaults() -> None:
    d = DecodingConfig(strategy="greedy", temperature=1.0, top_p=1.0, top_k=0)
    assert d == DecodingConfig()


def test_greedy_with_temperature_rejected_inside_experiment() -> None:
    with pytest.raises(ValidationError) as info:
        ExperimentConfig.model_validate({"decoding": {"temperature": 0.2}})
    assert info.value.errors()[0]["loc"][0] == "decoding"


# ------------------------------------------------------------------------------- prompt sources


def test_jsonl_needs_path() -> None:
    with pytest.raises(ValidationError, match="needs `path`"):
        PromptSource(source="jsonl")
    assert PromptSource(source="jsonl", path="p.jsonl").path == "p.jsonl"


def test_jsonl_path_must_not_be_empty() -> None:
    with pytest.raises(ValidationError):
        PromptSource(source="jsonl", path="")


def test_synthetic_needs_input_tokens() -> None:
    with pytest.raises(ValidationError, match="needs `input_tokens`"):
        PromptSource(source="synthetic")
    assert PromptSource(source="synthetic", input_tokens=128).input_tokens == 128


@pytest.mark.parametrize("tokens", [0, -3, 1_000_001])
def test_synthetic_input_tokens_range(tokens: int) -> None:
    with pytest.raises(ValidationError):
        PromptSource(source="synthetic", input_tokens=tokens)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"source": "builtin", "path": "p.jsonl"}, "only used with source 'jsonl'"),
        ({"source": "synthetic", "input_tokens": 8, "path": "p.jsonl"}, "only used with"),
        ({"source": "builtin", "input_tokens": 8}, "only used with source 'synthetic'"),
        ({"source": "jsonl", "path": "p.jsonl", "input_tokens": 8}, "only used with"),
        ({"source": "huggingface"}, "Input should be"),
    ],
)
def test_prompt_source_rejects_fields_of_other_sources(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        PromptSource.model_validate(data)


# ----------------------------------------------------------------------------- backend section


def test_empty_backend_section_and_no_section_are_the_same_experiment() -> None:
    none = ExperimentConfig.model_validate({})
    empty = ExperimentConfig.model_validate({"pytorch": {}})
    null = ExperimentConfig.model_validate({"pytorch": None})
    explicit = ExperimentConfig.model_validate(
        {"backend": "pytorch", "pytorch": {"attn_implementation": "sdpa", "device": "auto"}}
    )
    assert none == empty == null == explicit
    assert none.experiment_id() == empty.experiment_id() == null.experiment_id()
    assert none.experiment_id() == explicit.experiment_id()
    assert none.identity()["pytorch"] == {
        "attn_implementation": "sdpa",
        "device": "auto",
        "padding_side": "left",
    }


def test_backend_section_settings_are_kept() -> None:
    c = ExperimentConfig.model_validate({"pytorch": {"attn_implementation": "eager"}})
    assert c.pytorch is not None
    assert c.pytorch.attn_implementation == "eager"
    assert c.pytorch.device == "auto"


def test_filling_the_section_does_not_mutate_the_input() -> None:
    data: dict[str, Any] = {"batch_size": 2}
    ExperimentConfig.model_validate(data)
    assert data == {"batch_size": 2}


# ------------------------------------------------------------------------------- experiment id

# Computed once from the code as written; a change here means every stored experiment id (and
# every resumable campaign) changes too. Update deliberately, never to make the test pass.
DEFAULT_ID = "pytorch-a1732aa34e96"
FIXED_CONFIG: dict[str, Any] = {
    "model": "m",
    "batch_size": 8,
    "precision": "bf16",
    "decoding": {"strategy": "sampling", "temperature": 0.7, "top_p": 0.9},
    "prompts": {"source": "synthetic", "input_tokens": 128},
    "seed": 7,
    "pytorch": {"attn_implementation": "eager"},
}
FIXED_ID = "pytorch-c6d8caef22a5"


def test_experiment_id_is_pinned() -> None:
    assert ExperimentConfig().experiment_id() == DEFAULT_ID
    assert ExperimentConfig.model_validate(FIXED_CONFIG).experiment_id() == FIXED_ID


def test_experiment_id_format() -> None:
    eid = ExperimentConfig().experiment_id()
    backend, _, digest = eid.partition("-")
    assert backend == "pytorch"
    assert len(digest) == 12
    assert int(digest, 16) >= 0
    assert digest == config_hash(ExperimentConfig().identity())[:12]


def test_equal_configs_built_separately_have_equal_ids() -> None:
    a = ExperimentConfig.model_validate(FIXED_CONFIG)
    b = ExperimentConfig(
        seed=7,
        pytorch=PyTorchConfig(attn_implementation="eager"),
        prompts=PromptSource(source="synthetic", input_tokens=128),
        decoding=DecodingConfig(top_p=0.9, temperature=0.7, strategy="sampling"),
        precision="bf16",
        batch_size=8,
        model="m",
    )
    assert a is not b
    assert a.experiment_id() == b.experiment_id()
    # a JSON round trip (what exp.json does) keeps the id
    c = ExperimentConfig.model_validate_json(a.model_dump_json())
    assert c.experiment_id() == a.experiment_id()


VARIATIONS: list[tuple[str, dict[str, Any]]] = [
    ("model", {"model": "other/model"}),
    ("n_prompts", {"n_prompts": 17}),
    ("max_input_tokens", {"max_input_tokens": 128}),
    ("max_output_tokens", {"max_output_tokens": 65}),
    ("precision", {"precision": "fp16"}),
    ("batch_size", {"batch_size": 2}),
    ("seed", {"seed": 43}),
    ("warmup.runs", {"warmup": {"runs": 0}}),
    ("warmup.until_cv", {"warmup": {"until_cv": 0.05}}),
    ("prompts", {"prompts": {"source": "synthetic", "input_tokens": 32}}),
    ("decoding.strategy", {"decoding": {"strategy": "sampling"}}),
    ("decoding.ignore_eos", {"decoding": {"ignore_eos": False}}),
    ("decoding.repetition_penalty", {"decoding": {"repetition_penalty": 1.1}}),
    ("pytorch.attn_implementation", {"pytorch": {"attn_implementation": "eager"}}),
    ("pytorch.device", {"pytorch": {"device": "cpu"}}),
    ("passthrough_kwargs", {"passthrough_kwargs": {"trust_remote_code": True}}),
]


@pytest.mark.parametrize(("name", "change"), VARIATIONS, ids=[v[0] for v in VARIATIONS])
def test_any_field_change_changes_the_id(name: str, change: dict[str, Any]) -> None:
    assert ExperimentConfig.model_validate(change).experiment_id() != DEFAULT_ID


def test_all_variations_have_distinct_ids() -> None:
    ids = [ExperimentConfig.model_validate(c).experiment_id() for _, c in VARIATIONS]
    assert len(set(ids)) == len(ids)
    assert DEFAULT_ID not in ids


def test_setting_a_default_explicitly_keeps_the_id() -> None:
    explicit = ExperimentConfig.model_validate(
        {"batch_size": 1, "precision": "fp32", "decoding": {"strategy": "greedy"}, "seed": 42}
    )
    assert explicit.experiment_id() == DEFAULT_ID


# --------------------------------------------------------------------------------- config hash


def test_config_hash_is_sha256_of_canonical_json() -> None:
    expected = hashlib.sha256(b'{"a":{"x":2,"y":1},"b":[1,2]}').hexdigest()
    assert config_hash({"b": [1, 2], "a": {"y": 1, "x": 2}}) == expected


def test_config_hash_ignores_key_order_at_every_level() -> None:
    one = {"a": 1, "b": {"c": 2, "d": {"e": 3, "f": [1, {"g": 4, "h": 5}]}}}
    two = {"b": {"d": {"f": [1, {"h": 5, "g": 4}], "e": 3}, "c": 2}, "a": 1}
    assert list(one) != list(two)
    assert config_hash(one) == config_hash(two)


def test_identity_hash_ignores_field_order_of_the_input() -> None:
    forward = ExperimentConfig.model_validate(dict(FIXED_CONFIG))
    backward = ExperimentConfig.model_validate(dict(reversed(list(FIXED_CONFIG.items()))))
    assert config_hash(forward.identity()) == config_hash(backward.identity())


def test_config_hash_distinguishes_values_and_list_order() -> None:
    assert config_hash({"a": [1, 2]}) != config_hash({"a": [2, 1]})
    assert config_hash({"a": 1}) != config_hash({"a": "1"})
    assert config_hash({"a": 1}) != config_hash({"a": 1.5})
    assert config_hash({"a": None}) != config_hash({})


def test_config_hash_is_ascii_safe_for_unicode() -> None:
    # ensure_ascii: the same text hashes the same whatever the platform encoding
    h = config_hash({"model": "modèle"})
    expected = hashlib.sha256(b'{"model":"mod\\u00e8le"}').hexdigest()
    assert h == expected


# ------------------------------------------------------------------------------ campaign config


@pytest.mark.parametrize("name", ["demo", "a", "batch-size_v2.1", "A" * 64, "0x"])
def test_campaign_name_accepted(name: str) -> None:
    assert CampaignConfig(name=name).name == name


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a b", "a/b", "A" * 65, "é"])
def test_campaign_name_rejected(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        CampaignConfig(name=name)
    assert info.value.errors()[0]["loc"] == ("name",)


def test_campaign_requires_name() -> None:
    with pytest.raises(ValidationError) as info:
        CampaignConfig.model_validate({})
    assert info.value.errors()[0]["type"] == "missing"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cycles", 0),
        ("cycles", 1001),
        ("timeout_s", 0),
        ("timeout_s", -1),
        ("timeout_s", 7 * 24 * 3600 + 1),
        ("output_dir", ""),
        ("runner", "kubernetes"),
        ("runner", "Docker"),
        ("cold_start", "yes"),
    ],
)
def test_campaign_rejects_out_of_range(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        CampaignConfig.model_validate({"name": "x", field: value})
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"grid": {}}, "grid is empty"),
        ({"grid": {"batch_size": []}}, "'batch_size' has an empty list"),
        ({"grid": {"decoding..temperature": [1.0]}}, "not a dotted parameter name"),
        ({"grid": {".x": [1]}}, "not a dotted parameter name"),
        ({"grid": {"batch_size": 4}}, "valid list"),
        ({"experiments": []}, "empty list"),
        ({"experiments": [1]}, "valid dictionary"),
        ({"base": [1]}, "valid dictionary"),
    ],
)
def test_campaign_rejects_bad_grid_and_experiments(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        CampaignConfig.model_validate({"name": "x", **data})


def test_campaign_keeps_base_grid_and_experiments_raw() -> None:
    # a base only valid together with grid values is allowed at this level
    c = CampaignConfig.model_validate(
        {
            "name": "x",
            "base": {"decoding": {"temperature": 0.5}},
            "grid": {"decoding.strategy": ["sampling"]},
            "experiments": [{"anything": 1}],
        }
    )
    assert c.base == {"decoding": {"temperature": 0.5}}
    assert c.grid == {"decoding.strategy": ["sampling"]}
    assert c.experiments == [{"anything": 1}]


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", True), ("batch_size", "4"), ("n_prompts", 2.5), ("precision", 16)],
)
def test_experiment_does_not_coerce_types(field: str, value: Any) -> None:
    # A YAML `true` or "4" for a count is a mistake to report, not a value to guess.
    with pytest.raises(ValidationError):
        ExperimentConfig.model_validate({field: value})


def test_campaign_does_not_coerce_types() -> None:
    with pytest.raises(ValidationError):
        CampaignConfig.model_validate({"name": "x", "cycles": "3"})


def test_float_fields_accept_integers() -> None:
    assert CampaignConfig.model_validate({"name": "x", "timeout_s": 60}).timeout_s == 60.0
    assert DecodingConfig(strategy="sampling", temperature=1).temperature == 1.0
