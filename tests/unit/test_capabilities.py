"""Backend-aware validation: the capability table, unsupported grid combinations (error or
skip_invalid), the new backend sections and the experiment ids they must not disturb."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from llenergymeasure.config import ExperimentConfig, load_campaign
from llenergymeasure.config.backends import TensorRTConfig, VLLMConfig
from llenergymeasure.config.capabilities import UNSUPPORTED_VALUE, Precision, Quantization
from llenergymeasure.config.describe import campaign_parameters, parameters
from llenergymeasure.config.descriptor import descriptors
from llenergymeasure.config.experiment import BACKEND_SECTIONS
from llenergymeasure.config.grid import KNOWN_BACKENDS
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import ManifestStore

WriteYaml = Callable[..., Path]

# ------------------------------------------------------------------------ one source of truth


CAPABILITIES = {name: d.capabilities for name, d in descriptors().items()}
BUILTIN = ("pytorch", "vllm", "tensorrt")


def test_backend_names_descriptors_sections_and_grid_agree() -> None:
    names = set(descriptors())
    assert names >= set(BUILTIN)
    assert set(BACKEND_SECTIONS) == names
    assert set(KNOWN_BACKENDS) == names
    assert set(get_args(ExperimentConfig.model_fields["backend"].annotation)) == names
    for name, found in descriptors().items():
        assert found.name == name
        assert ExperimentConfig.model_fields[name].annotation == found.settings | None


def test_capabilities_only_name_values_the_config_types_allow() -> None:
    for caps in CAPABILITIES.values():
        assert set(caps.precision) <= set(get_args(Precision))
        assert set(caps.quantization) <= {None, *get_args(Quantization)}


# ------------------------------------------------------------------------ validation by table


@pytest.mark.parametrize(
    ("backend", "quantization"),
    [
        (b, q)
        for b in BUILTIN
        for q in (None, *get_args(Quantization))
        if q in CAPABILITIES[b].quantization
    ],
)
def test_every_supported_quantization_validates(backend: str, quantization: str | None) -> None:
    config = ExperimentConfig.model_validate({"backend": backend, "quantization": quantization})
    assert config.quantization == quantization


@pytest.mark.parametrize(
    ("backend", "quantization"),
    [("pytorch", "fp8"), ("vllm", "bnb_4bit"), ("vllm", "bnb_8bit"), ("tensorrt", "bnb_8bit")],
)
def test_unsupported_quantization_names_the_alternatives(backend: str, quantization: str) -> None:
    with pytest.raises(ValidationError) as info:
        ExperimentConfig.model_validate({"backend": backend, "quantization": quantization})
    (error,) = info.value.errors()
    assert error["type"] == UNSUPPORTED_VALUE
    assert error["loc"] == ("quantization",)
    supported = ", ".join("null" if q is None else q for q in CAPABILITIES[backend].quantization)
    assert error["msg"] == (
        f"backend '{backend}' does not support quantization '{quantization}'; "
        f"it supports: {supported}"
    )


# ------------------------------------------------------------------------------- grid: reject

GRID = """
name: q
{skip}base:
  n_prompts: 2
grid:
  backend: [pytorch, vllm]
  quantization: [null, bnb_4bit]
  vllm.max_num_seqs: [4, 8]
"""


def test_unsupported_grid_combination_fails_at_expansion(write_yaml: WriteYaml) -> None:
    path = write_yaml(GRID.format(skip=""))
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert "(backend=vllm, quantization=bnb_4bit, vllm.max_num_seqs=4)" in message
    assert "grid.quantization[1]" in message
    assert "line 7" in message
    assert "backend 'vllm' does not support quantization 'bnb_4bit'" in message
    assert "it supports: null, fp8, awq, gptq\n" in message + "\n"  # the value is named once
    assert "skip_invalid: true" in message


def test_cli_reports_unsupported_combination_with_exit_2(write_yaml: WriteYaml) -> None:
    path = write_yaml(GRID.format(skip=""))
    proc = subprocess.run(
        [sys.executable, "-m", "llenergymeasure.cli", "campaign", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert proc.returncode == 2
    assert "does not support quantization 'bnb_4bit'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# --------------------------------------------------------------------------- grid: skip_invalid


def test_skip_invalid_lists_every_skipped_combination(write_yaml: WriteYaml) -> None:
    campaign = load_campaign(write_yaml(GRID.format(skip="skip_invalid: true\n")))
    assert [e.label for e in campaign.experiments] == [
        {"backend": "pytorch", "quantization": None},
        {"backend": "pytorch", "quantization": "bnb_4bit"},
        {"backend": "vllm", "quantization": None, "vllm.max_num_seqs": 4},
        {"backend": "vllm", "quantization": None, "vllm.max_num_seqs": 8},
    ]
    assert [s.label for s in campaign.skipped] == [
        {"backend": "vllm", "quantization": "bnb_4bit", "vllm.max_num_seqs": 4},
        {"backend": "vllm", "quantization": "bnb_4bit", "vllm.max_num_seqs": 8},
    ]
    assert all("does not support quantization 'bnb_4bit'" in s.reason for s in campaign.skipped)


def test_skipped_combinations_are_in_the_manifest(write_yaml: WriteYaml, tmp_path: Path) -> None:
    campaign = load_campaign(write_yaml(GRID.format(skip="skip_invalid: true\n")))
    manifest = ManifestStore(create_campaign(campaign, tmp_path / "out")).load()
    assert len(manifest.entries) == 4
    assert [(s.label, s.reason) for s in manifest.skipped] == [
        (s.label, s.reason) for s in campaign.skipped
    ]


def test_cli_prints_skipped_combinations(write_yaml: WriteYaml) -> None:
    path = write_yaml(GRID.format(skip="skip_invalid: true\n"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llenergymeasure.cli",
            "campaign",
            str(path),
            "--dry-run",
            "--runner",
            "local",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2
    assert "vllm.max_num_seqs=8" in skipped[1]


def test_skip_invalid_does_not_hide_other_mistakes(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        "name: q\nskip_invalid: true\ngrid:\n  backend: [vllm]\n"
        "  quantization: [bnb_4bit]\n  batch_size: [0]\n"
    )
    with pytest.raises(ConfigError, match="greater than or equal to 1"):
        load_campaign(path)


def test_campaign_whose_every_combination_is_skipped_is_an_error(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        "name: q\nskip_invalid: true\ngrid:\n  backend: [vllm]\n  quantization: [bnb_8bit]\n"
    )
    with pytest.raises(ConfigError, match="every grid combination was skipped"):
        load_campaign(path)


# ------------------------------------------------------------------------------- backend sections


def test_each_backend_gets_its_own_section_and_no_other() -> None:
    for backend, section in (("vllm", VLLMConfig), ("tensorrt", TensorRTConfig)):
        config = ExperimentConfig(backend=backend)  # type: ignore[arg-type]
        assert getattr(config, backend) == section()
        others = [s for s in BACKEND_SECTIONS if s != backend]
        assert all(getattr(config, s) is None for s in others)


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"backend": "vllm", "vllm": {"max_num_seqs": 0}}, ("vllm", "max_num_seqs")),
        ({"backend": "vllm", "vllm": {"block_size": 12}}, ("vllm", "block_size")),
        (
            {"backend": "vllm", "vllm": {"gpu_memory_utilization": 1.5}},
            ("vllm", "gpu_memory_utilization"),
        ),
        ({"backend": "vllm", "vllm": {"kv_cache_dtype": "int4"}}, ("vllm", "kv_cache_dtype")),
        ({"backend": "vllm", "vllm": {"enforce_eager": "yes"}}, ("vllm", "enforce_eager")),
        ({"backend": "vllm", "vllm": {"max_num_seq": 4}}, ("vllm", "max_num_seq")),
        (
            {"backend": "tensorrt", "tensorrt": {"kv_cache_dtype": "fp4"}},
            ("tensorrt", "kv_cache_dtype"),
        ),
        (
            {"backend": "tensorrt", "tensorrt": {"pipeline_parallel_size": 0}},
            ("tensorrt", "pipeline_parallel_size"),
        ),
        (
            {"backend": "pytorch", "pytorch": {"torch_compile": "fast"}},
            ("pytorch", "torch_compile"),
        ),
        ({"backend": "vllm", "pytorch": {}}, ("pytorch",)),
        (
            {"decoding": {"ignore_eos": False, "min_output_tokens": 0}},
            ("decoding", "min_output_tokens"),
        ),
    ],
)
def test_bad_backend_settings_are_rejected_at_their_key(
    data: dict[str, Any], loc: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as info:
        ExperimentConfig.model_validate(data)
    assert info.value.errors()[0]["loc"] == loc


def test_min_output_tokens_cannot_exceed_max_output_tokens() -> None:
    with pytest.raises(ValidationError, match=r"min_output_tokens \(9\) exceeds"):
        ExperimentConfig.model_validate(
            {"max_output_tokens": 8, "decoding": {"ignore_eos": False, "min_output_tokens": 9}}
        )


def test_min_output_tokens_needs_eos_to_matter() -> None:
    with pytest.raises(ValidationError, match="no effect with ignore_eos: true"):
        ExperimentConfig.model_validate({"decoding": {"min_output_tokens": 2}})


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"pytorch": {"device": "cpu", "device_map": "auto"}}, "device_map spreads the model"),
        ({"pytorch": {"device": "cpu", "decode": "cuda_graphs"}}, "cuda_graphs needs a CUDA"),
        (
            {"pytorch": {"decode": "cuda_graphs", "torch_compile": "default"}},
            "leave torch_compile",
        ),
        (
            {"pytorch": {"decode": "cuda_graphs"}, "warmup": {"runs": 1}},
            "set warmup.runs to 2 or more",
        ),
        (
            {"pytorch": {"decode": "cuda_graphs"}, "warmup": {"cover": "first_batch"}},
            "leave warmup.cover at shapes or batches",
        ),
    ],
)
def test_pytorch_settings_that_cannot_go_together(data: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ExperimentConfig.model_validate(data)


# ------------------------------------------------------------------------------- experiment ids


def test_unset_new_settings_leave_the_pytorch_id_unchanged() -> None:
    # the pinned ids in test_config.py hold; here: explicit nulls hash like absent keys
    plain = ExperimentConfig()
    explicit = ExperimentConfig.model_validate(
        {
            "quantization": None,
            "vllm": None,
            "tensorrt": None,
            "decoding": {"min_output_tokens": None},
            "pytorch": {
                "device_map": None,
                "torch_compile": None,
                "cache_implementation": None,
                "decode": None,
            },
        }
    )
    assert explicit.experiment_id() == plain.experiment_id()
    identity = plain.identity()
    assert "vllm" not in identity and "tensorrt" not in identity
    assert "quantization" not in identity
    assert "torch_compile" not in identity["pytorch"]


@pytest.mark.parametrize(
    "change",
    [
        {"quantization": "bnb_8bit"},
        {"decoding": {"ignore_eos": False, "min_output_tokens": 2}},
        {"pytorch": {"torch_compile": "default"}},
        {"pytorch": {"cache_implementation": "static"}},
        {"pytorch": {"decode": "cuda_graphs"}},
        {"pytorch": {"device_map": "auto"}},
        {"pytorch": {"attn_implementation": "flash_attention_2"}},
        {"backend": "vllm"},
        {"backend": "tensorrt"},
    ],
)
def test_setting_a_new_setting_changes_the_id(change: dict[str, Any]) -> None:
    assert (
        ExperimentConfig.model_validate(change).experiment_id()
        != ExperimentConfig().experiment_id()
    )


def test_vllm_settings_each_change_the_id() -> None:
    base = ExperimentConfig(backend="vllm")
    ids = {base.experiment_id()}
    for name, value in {
        "max_num_seqs": 4,
        "max_num_batched_tokens": 512,
        "gpu_memory_utilization": 0.5,
        "kv_cache_memory_bytes": 2**26,
        "enforce_eager": True,
        "enable_prefix_caching": False,
        "enable_chunked_prefill": False,
        "kv_cache_dtype": "fp8",
        "block_size": 32,
        "tensor_parallel_size": 2,
        "max_model_len": 1024,
    }.items():
        ids.add(ExperimentConfig(backend="vllm", vllm=VLLMConfig(**{name: value})).experiment_id())
    assert len(ids) == 12
    assert base.experiment_id().startswith("vllm-")


# ---------------------------------------------------------------------------- lem config list


def test_config_list_covers_every_field_of_every_backend() -> None:
    for backend in BACKEND_SECTIONS:
        keys = {p.key for p in parameters(backend)}
        assert {"precision", "quantization", "batch_size", "decoding.temperature"} <= keys
        section = ExperimentConfig.model_fields[backend].annotation
        model = next(a for a in get_args(section) if a is not type(None))
        assert {f"{backend}.{f}" for f in model.model_fields} <= keys
        assert not any(
            k.startswith(tuple(f"{o}." for o in BACKEND_SECTIONS if o != backend)) for k in keys
        )
        assert all(p.description for p in parameters(backend)), backend


def test_config_list_shows_each_backends_supported_values() -> None:
    rows = {b: {p.key: p for p in parameters(b)} for b in BACKEND_SECTIONS}
    assert rows["pytorch"]["quantization"].type == "null | bnb_4bit | bnb_8bit"
    assert rows["vllm"]["quantization"].type == "null | fp8 | awq | gptq"
    assert rows["vllm"]["vllm.max_num_seqs"].type == "int | null (>= 1, <= 1000000)"
    assert rows["vllm"]["vllm.max_num_seqs"].default == "null"
    assert rows["vllm"]["vllm.block_size"].type == "1 | 8 | 16 | 32 | 64 | 128 | null"
    assert rows["pytorch"]["pytorch.attn_implementation"].default == "sdpa"
    assert rows["tensorrt"]["tensorrt.kv_cache_dtype"].type == "auto | fp8 | int8"
    assert {p.key for p in campaign_parameters()} >= {"name", "grid", "skip_invalid", "cycles"}


def test_cli_config_list_json_and_bad_backend() -> None:
    def lem(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llenergymeasure.cli", "config", "list", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    proc = lem("--json")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert set(listing) == {*BACKEND_SECTIONS, "campaign file"}
    assert {"key", "type", "default", "description"} == set(listing["vllm"][0])
    proc = lem("--backend", "sglang")
    assert proc.returncode == 2
    assert "unknown backend 'sglang'; expected one of: pytorch, vllm, tensorrt" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("data", "gpus"),
    [
        ({}, 1),
        ({"pytorch": {"device_map": "auto"}}, 1),
        ({"backend": "vllm"}, 1),
        ({"backend": "vllm", "vllm": {"tensor_parallel_size": 4}}, 4),
        ({"backend": "tensorrt", "tensorrt": {"tensor_parallel_size": 2}}, 2),
        (
            {
                "backend": "tensorrt",
                "tensorrt": {"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
            },
            4,
        ),
    ],
)
def test_gpus_required_follows_the_engines_parallelism(data: dict[str, Any], gpus: int) -> None:
    assert ExperimentConfig.model_validate(data).gpus_required() == gpus


def test_server_mode_runs_on_the_backends_whose_descriptor_serves() -> None:
    """Every built-in serves (a backend that does not: test_backend_plugin.py)."""
    serving = [name for name, found in descriptors().items() if found.serves]
    assert serving == ["pytorch", "vllm", "tensorrt"]
