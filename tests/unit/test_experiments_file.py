"""experiments.json: each config stored once at creation; exp.json derived from it on demand."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from llenergymeasure.config import load_campaign
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.experiments import EXPERIMENTS_FILE, ExperimentSpecs
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import ManifestStore

WriteYaml = Callable[..., Path]

# Settings of every kind: nested sections, backend-scoped keys, nulls, floats, explicit entries.
VARIED = """\
name: varied
base:
  n_prompts: 4
  decoding: {strategy: sampling, temperature: 0.7}
  warmup: {runs: 1}
  passthrough_kwargs: {low_cpu_mem_usage: true, revision: main}
grid:
  backend: [pytorch, vllm]
  batch_size: [1, 4]
  precision: [fp32, bf16]
  pytorch.attn_implementation: [eager, sdpa]
  vllm.gpu_memory_utilization: [0.5, 0.9]
experiments:
  - {prompts: {source: synthetic, input_tokens: 16}, seed: 7}
"""


def _created(tmp_path: Path, write_yaml: WriteYaml, text: str = VARIED) -> Path:
    return create_campaign(load_campaign(write_yaml(text)), output_root=tmp_path / "out")


def test_stored_configs_come_back_identical(tmp_path: Path, write_yaml: WriteYaml) -> None:
    loaded = load_campaign(write_yaml(VARIED))
    directory = create_campaign(loaded, output_root=tmp_path / "out")
    specs = ExperimentSpecs(directory)
    assert len(loaded.experiments) == 17
    for exp in loaded.experiments:
        assert specs.config(exp.experiment_id) == exp.config
    assert specs.base_dir == loaded.base_dir


def test_spec_follows_the_campaign_directory_and_attempt(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    directory = _created(tmp_path, write_yaml, "name: one\nbase: {n_prompts: 1}\n")
    moved = tmp_path / "elsewhere"
    directory.rename(moved)
    manifest = ManifestStore(moved).load()
    (entry,) = manifest.entries
    spec = ExperimentSpecs(moved).spec(manifest, entry, attempt=3)
    assert spec.attempt == 3
    assert spec.output_dir == str(moved.resolve() / entry.experiment_id / "cycle-1")
    assert spec.cache_dir == str(moved.resolve() / ".cache")
    assert (spec.campaign_id, spec.campaign_name) == (manifest.campaign_id, "one")


def test_edited_config_is_refused(tmp_path: Path, write_yaml: WriteYaml) -> None:
    directory = _created(tmp_path, write_yaml)
    path = directory / EXPERIMENTS_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    experiment_id = next(iter(data["configs"]))
    data["configs"][experiment_id]["batch_size"] = 99
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        ExperimentSpecs(directory).config(experiment_id)
    assert str(path) in str(info.value)
    assert "edited" in str(info.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "older llenergymeasure"),
        ("{not json", "unreadable"),
        ('{"base_dir": "."}', "not an experiments file"),
        ('{"base_dir": ".", "configs": {"pytorch-x": {"batch_size": "a"}}}', "invalid"),
        ('{"base_dir": ".", "configs": {}}', "no config for experiment pytorch-x"),
    ],
)
def test_broken_file_is_a_config_error(tmp_path: Path, content: str | None, expected: str) -> None:
    if content is not None:
        (tmp_path / EXPERIMENTS_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        ExperimentSpecs(tmp_path).config("pytorch-x")
