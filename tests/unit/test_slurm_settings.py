"""Slurm settings from the environment: values parsed, each with the source that set it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llenergymeasure.config.slurm import SlurmSettings
from llenergymeasure.errors import PreflightError
from llenergymeasure.orchestrator.runners.slurm import sbatch_flags


def test_defaults_and_sources() -> None:
    settings = SlurmSettings.from_env(
        {"LEM_SLURM_PARTITION": "gpu", "LEM_SLURM_EXTRA_SBATCH": "--constraint='h200 x' -C a"}
    )
    assert settings.partition == "gpu" and settings.exclusive is True
    assert settings.extra_sbatch == ("--constraint=h200 x", "-C", "a")
    assert settings.sources["partition"] == "env LEM_SLURM_PARTITION"
    assert settings.sources["exclusive"] == "default"


@pytest.mark.parametrize(
    ("var", "value"),
    [("LEM_SLURM_NODE_RUNNER", "podman"), ("LEM_SLURM_ARRAY_PARALLELISM", "0")],
)
def test_bad_value_is_refused(var: str, value: str) -> None:
    with pytest.raises(ValidationError):
        SlurmSettings.from_env({var: value})


def test_extra_sbatch_flags_become_submitit_parameters() -> None:
    words = ("--constraint=h200", "--mail-type", "END", "--requeue")
    assert sbatch_flags(words) == {"constraint": "h200", "mail-type": "END", "requeue": True}
    with pytest.raises(PreflightError, match="not a long flag"):
        sbatch_flags(("-C", "h200"))
