"""The library API: what `lem campaign`, `lem run` and `lem results` do, as functions that
return typed results instead of printing.

    import llenergymeasure as lem
    result = lem.run_experiment({"model": "builtin:tiny-llama", "batch_size": 8})
    campaign = lem.run_campaign("campaigns/demo.yaml", cycles=3)
    campaign.summary          # pandas DataFrame: summary.csv
    lem.load_results(campaign.campaign_dir).runs   # results.csv, read back

Experiments run in worker processes exactly as from the CLI. Unlike the CLI, a campaign whose
file sets no `cycles` runs 1 cycle here. Ctrl+C stops the campaign (finished results are kept,
`lem resume` continues it) and raises KeyboardInterrupt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ValidationError

from llenergymeasure.config.campaign import CampaignConfig, StatisticsConfig
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.grid import (
    Campaign,
    campaign_from_data,
    experiment_from_data,
    load_campaign,
    load_experiment,
)
from llenergymeasure.config.settings import load_settings, resolve_results_dir
from llenergymeasure.errors import ConfigError, LemError
from llenergymeasure.orchestrator.campaign import Events, create_campaign
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry, ManifestStore
from llenergymeasure.orchestrator.webhooks import run_with_webhooks
from llenergymeasure.permissions import no_world_write
from llenergymeasure.results.aggregate import summarize
from llenergymeasure.results.collate import results_frame
from llenergymeasure.results.schema import ExperimentResult

ConfigOrPath = str | Path | Mapping[str, Any] | BaseModel
log = logging.getLogger("llenergymeasure")


class ExperimentFailedError(LemError):
    """run_experiment's experiment did not produce a result (its error says why)."""


@dataclass(frozen=True)
class CampaignResults:
    """A campaign directory, read: its state, every result and both tables."""

    campaign_dir: Path
    manifest: Manifest
    results: list[ExperimentResult]
    """One per done run, in run order."""
    runs: pd.DataFrame
    """results.csv: one flat row per run, failed and pending ones included."""
    summary: pd.DataFrame
    """summary.csv: mean, spread and bootstrap CI per group and metric."""

    @property
    def failed(self) -> list[ManifestEntry]:
        """Runs that ended without a result on their own (status failed or oom)."""
        return self.manifest.failed()


def run_campaign(
    config_or_path: ConfigOrPath,
    *,
    gpus: tuple[int, ...] | None = None,
    events: Events | None = None,
    **overrides: Any,
) -> CampaignResults:
    """Run a campaign (a YAML path, a mapping or a CampaignConfig) to the end. overrides
    replace top-level campaign keys (cycles=3, order="shuffled", output_dir=...). Failed
    experiments do not raise: see .failed. User settings (.lem-config.yaml, LEM_* variables)
    apply as from the CLI; a campaign over their max_experiments is refused (the CLI's --yes
    is `max_experiments` in the settings here)."""
    limit = load_settings().max_experiments
    if isinstance(config_or_path, (str, Path)):
        campaign = load_campaign(Path(config_or_path), overrides, max_experiments=limit)
    else:
        data = _as_data(config_or_path)
        campaign = campaign_from_data(data, Path.cwd(), overrides, max_experiments=limit)
    return _run(campaign, gpus, events)


def run_experiment(
    config_or_path: ConfigOrPath,
    *,
    output_dir: str | Path | None = None,
    timeout_s: float | None = None,
    gpus: tuple[int, ...] | None = None,
    **overrides: Any,
) -> ExperimentResult:
    """Run one experiment once (a YAML path, a mapping or an ExperimentConfig) and return
    its result; overrides replace experiment keys (batch_size=8, ...). Raises
    ExperimentFailedError when it fails."""
    if isinstance(config_or_path, (str, Path)):
        campaign = load_experiment(Path(config_or_path), overrides)
    else:
        campaign = experiment_from_data(_as_data(config_or_path), Path.cwd(), overrides)
    root = Path(output_dir) if output_dir is not None else None
    outcome = _run(campaign, gpus, None, output_root=root, timeout_s=timeout_s)
    (entry,) = outcome.manifest.entries
    if entry.status != "done":
        raise ExperimentFailedError(
            f"experiment {entry.experiment_id} failed: {entry.error} "
            f"(details in {outcome.campaign_dir / Path(entry.exp_path).parent})"
        )
    return outcome.results[0]


def load_results(campaign_dir: str | Path, group_by: list[str] | None = None) -> CampaignResults:
    """Read a campaign directory (finished or not). group_by overrides the campaign's own
    grouping for the summary (e.g. ["batch_size"]); the files on disk are not changed."""
    directory = Path(campaign_dir)
    manifest = ManifestStore(directory).load()
    statistics = manifest.execution.statistics
    if group_by is not None:
        try:
            statistics = StatisticsConfig.model_validate(
                {**statistics.model_dump(), "group_by": group_by}
            )
        except ValidationError as e:
            problems = "; ".join(
                str(err["msg"]).removeprefix("Value error, ") for err in e.errors()
            )
            raise ConfigError(f"group_by {group_by}: {problems}") from e
    runs = results_frame(directory, manifest)
    results = [
        ExperimentResult.model_validate_json((directory / e.result_path).read_bytes())
        for e in manifest.entries
        if e.status == "done" and e.result_path and (directory / e.result_path).is_file()
    ]
    return CampaignResults(
        campaign_dir=directory,
        manifest=manifest,
        results=results,
        runs=runs,
        summary=summarize(runs, statistics),
    )


def _run(
    campaign: Campaign,
    gpus: tuple[int, ...] | None,
    events: Events | None,
    output_root: Path | None = None,
    timeout_s: float | None = None,
) -> CampaignResults:
    settings = resolve_results_dir(load_settings(), output_root, campaign.config)
    with no_world_write():
        directory = create_campaign(campaign, Path(settings.results_dir), settings=settings)
        summary = run_with_webhooks(
            directory,
            settings.webhooks,
            events=events,
            on_problem=log.warning,
            gpus=gpus,
            timeout_s=timeout_s,
        )
    if summary.interrupted:
        raise KeyboardInterrupt
    return load_results(directory)


def _as_data(config: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(config, (CampaignConfig, ExperimentConfig)):
        return config.model_dump(mode="json", exclude_unset=True)
    if isinstance(config, Mapping):
        return dict(config)
    raise ConfigError(
        f"expected a YAML path, a mapping, a CampaignConfig or an ExperimentConfig; "
        f"got {type(config).__name__}"
    )
