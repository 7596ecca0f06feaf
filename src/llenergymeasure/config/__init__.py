"""Validated configuration: experiments, campaigns and grid expansion. No side effects."""

from llenergymeasure.config.campaign import CampaignConfig
from llenergymeasure.config.experiment import (
    DecodingConfig,
    ExperimentConfig,
    PromptSource,
    PyTorchConfig,
    config_hash,
)
from llenergymeasure.config.grid import Campaign, PlannedExperiment, load_campaign, load_experiment

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
