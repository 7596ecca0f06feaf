"""Slurm settings: key by key from the campaign file's `slurm:` > LEM_SLURM_* > the
`.lem-config.yaml` `slurm:` section > the default, each recorded with its source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llenergymeasure.config.grid import load_campaign
from llenergymeasure.config.settings import SETTINGS_FILE, load_settings, resolve_settings
from llenergymeasure.errors import ConfigError, PreflightError
from llenergymeasure.orchestrator.runners.slurm import sbatch_flags


def test_each_key_from_its_place_with_its_source(
    tmp_path: Path, write_yaml: Callable[..., Path]
) -> None:
    settings_file = tmp_path / SETTINGS_FILE
    settings_file.write_text(
        "slurm: {partition: cpu, qos: low, time_min: 30, array_parallelism: 8}\n", "utf-8"
    )
    env = {
        "LEM_SLURM_QOS": "high",
        "LEM_SLURM_EXTRA_SBATCH": "--constraint='h200 x' --requeue",
        "LEM_SLURM_ENVIRONMENT": "HF_HOME=/shared/hf A=1",
        "LEM_SLURM_EXCLUSIVE": "no",
    }
    campaign = load_campaign(write_yaml("name: x\nslurm: {partition: gpu, node_runner: docker}\n"))
    resolved = resolve_settings(load_settings(tmp_path, env=env), campaign.config)
    slurm = resolved.slurm
    assert (slurm.partition, slurm.node_runner, slurm.qos, slurm.time_min) == (
        "gpu",
        "docker",
        "high",
        30,
    )
    assert slurm.extra_sbatch == ["--constraint=h200 x", "--requeue"]
    assert slurm.environment == {"HF_HOME": "/shared/hf", "A": "1"}
    assert (slurm.exclusive, slurm.array_parallelism, slurm.account) == (False, 8, None)
    record = resolved.record()  # the flags' values redacted (issue 27.3), the rest as is
    redacted = {"extra_sbatch": ["--constraint=<redacted>", "--requeue"]}
    assert record.slurm == slurm.model_copy(update=redacted)
    assert resolved.restored(record).slurm == slurm
    assert {k: v for k, v in record.sources.items() if k.startswith("slurm.")} == {
        "slurm.partition": "campaign file",
        "slurm.node_runner": "campaign file",
        "slurm.qos": "environment (LEM_SLURM_QOS)",
        "slurm.extra_sbatch": "environment (LEM_SLURM_EXTRA_SBATCH)",
        "slurm.environment": "environment (LEM_SLURM_ENVIRONMENT)",
        "slurm.exclusive": "environment (LEM_SLURM_EXCLUSIVE)",
        "slurm.time_min": str(settings_file),
        "slurm.array_parallelism": str(settings_file),
    }


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("LEM_SLURM_NODE_RUNNER", "podman", "LEM_SLURM_NODE_RUNNER"),
        ("LEM_SLURM_ARRAY_PARALLELISM", "0", "LEM_SLURM_ARRAY_PARALLELISM"),
        ("LEM_SLURM_EXCLUSIVE", "maybe", "expected true or false"),
        ("LEM_SLURM_ENVIRONMENT", "NOEQUALS", "expected NAME=value pairs"),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(Path("/"), env={var: value})


def test_extra_sbatch_flags_become_submitit_parameters() -> None:
    words = ("--constraint=h200", "--mail-type", "END", "--requeue")
    assert sbatch_flags(words) == {"constraint": "h200", "mail-type": "END", "requeue": True}
    with pytest.raises(PreflightError, match="not a long flag"):
        sbatch_flags(("-C", "h200"))
