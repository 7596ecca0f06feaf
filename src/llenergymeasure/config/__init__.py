"""Validated configuration: experiments, campaigns and grid expansion. No side effects.

The names below are imported on first use: a worker that only reads exp.json then never imports
the campaign, grid and YAML modules (about 60 ms of every experiment's start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llenergymeasure.config.backends import PyTorchConfig
    from llenergymeasure.config.campaign import CampaignConfig
    from llenergymeasure.config.experiment import (
        DecodingConfig,
        ExperimentConfig,
        PromptSource,
        config_hash,
    )
    from llenergymeasure.config.grid import (
        Campaign,
        PlannedExperiment,
        load_campaign,
        load_experiment,
    )

_HOMES = {
    "Campaign": "grid",
    "CampaignConfig": "campaign",
    "DecodingConfig": "experiment",
    "ExperimentConfig": "experiment",
    "PlannedExperiment": "grid",
    "PromptSource": "experiment",
    "PyTorchConfig": "backends",
    "config_hash": "experiment",
    "load_campaign": "grid",
    "load_experiment": "grid",
}

__all__ = [
    "Campaign",
    "CampaignConfig",
    "DecodingConfig",
    "ExperimentConfig",
    "PlannedExperiment",
    "PromptSource",
    "PyTorchConfig",
    "config_hash",
    "load_campaign",
    "load_experiment",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
