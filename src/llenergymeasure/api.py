"""The library API: what `lem campaign`, `lem run` and `lem results` do, as functions that
return typed results instead of printing.

    import llenergymeasure as lem
    result = lem.run_experiment({"model": "builtin:tiny-llama", "batch_size": 8})
    campaign = lem.run_campaign("campaigns/demo.yaml", cycles=3)
    campaign.summary          # pandas DataFrame: summary.csv
    lem.load_results(campaign.campaign_dir).runs   # results.csv, read back

Experiments run in worker processes exactly as from the CLI, through the same conductor: the
same settings precedence and the same defaults (a campaign whose file sets no `cycles` runs
conductor.DEFAULT_CYCLES, 3). Ctrl+C stops the campaign (finished results are kept, `resume`
continues it) and raises KeyboardInterrupt.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

import pandas as pd
from pydantic import BaseModel, ValidationError

from llenergymeasure.conductor import (
    Events,
    Manifest,
    ManifestEntry,
    Overrides,
    Plan,
    execute,
    load_manifest,
    plan_campaign,
    plan_resume,
    resumable,
)
from llenergymeasure.config.campaign import CampaignConfig, StatisticsConfig
from llenergymeasure.config.choices import RunnerChoice
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.grid import (
    campaign_from_data,
    experiment_from_data,
    load_campaign,
    load_experiment,
)
from llenergymeasure.errors import ConfigError, LemError
from llenergymeasure.faces import in_library_words
from llenergymeasure.permissions import no_world_write
from llenergymeasure.results.aggregate import summarize
from llenergymeasure.results.collate import results_frame
from llenergymeasure.results.compare import Comparisons, compare, run_labels
from llenergymeasure.results.schema import ExperimentResult

ConfigOrPath = str | Path | Mapping[str, Any] | BaseModel
log = logging.getLogger("llenergymeasure")
F = TypeVar("F", bound=Callable[..., Any])


def library_words(function: F) -> F:
    """Raise the function's LemErrors in library words: keyword arguments, not CLI flags."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except LemError as e:
            in_library_words(e)
            raise

    return cast(F, call)


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
    """summary.csv: mean, spread and Student-t CI per group and metric."""

    @property
    def failed(self) -> list[ManifestEntry]:
        """Runs that ended without a result on their own (status failed or oom)."""
        return self.manifest.failed()

    def compare(
        self, a: str | None = None, b: str | None = None, *, baseline: str | None = None
    ) -> Comparisons:
        """`lem compare`: a against b (ids, unique prefixes or labels), else every experiment
        against baseline (default: the first of the campaign file's grid), paired by cycle."""
        if (a is None) != (b is None) or (a is not None and baseline is not None):
            raise ConfigError("compare takes a and b, or neither and optionally baseline")
        return compare(
            self.runs,
            self.experiment_order,
            pair=(a, b) if a is not None and b is not None else None,
            baseline=baseline,
            labels=run_labels(self.runs),
            confidence=self.manifest.execution.statistics.confidence,
        )

    @property
    def experiment_order(self) -> list[str]:
        """Experiment ids in the campaign file's grid order (experiments.json keeps it)."""
        from llenergymeasure.conductor import experiment_order

        return experiment_order(self.campaign_dir)


@library_words
def run_campaign(
    config_or_path: ConfigOrPath,
    *,
    gpus: tuple[int, ...] | None = None,
    events: Events | None = None,
    runner: str | None = None,
    timeout_s: float | None = None,
    retries: int | None = None,
    allow_large: bool = False,
    wait_for_gpus: bool = True,
    **overrides: Any,
) -> CampaignResults:
    """Run a campaign (a YAML path, a mapping or a CampaignConfig) to the end. overrides
    replace top-level campaign keys (cycles=3, order="shuffled", output_dir=...). Failed
    experiments do not raise: see .failed. User settings (.lem-config.yaml, LEM_* variables)
    apply as from the CLI; a campaign over their max_experiments is refused unless
    allow_large=True (the CLI's --yes)."""
    given = Overrides(
        face="api",
        runner=_runner_choice(runner),
        timeout_s=timeout_s,
        retries=retries,
        gpus=gpus,
        allow_large=allow_large,
        wait_for_gpus=wait_for_gpus,
    )
    if isinstance(config_or_path, (str, Path)):
        path = Path(config_or_path)
        plan = plan_campaign(
            lambda keys, limit: load_campaign(path, {**overrides, **keys}, max_experiments=limit),
            given,
        )
    else:
        data = _as_data(config_or_path)
        plan = plan_campaign(
            lambda keys, limit: campaign_from_data(
                data, Path.cwd(), {**overrides, **keys}, max_experiments=limit
            ),
            given,
        )
    return _run(plan, events)


@library_words
def run_experiment(
    config_or_path: ConfigOrPath,
    *,
    output_dir: str | Path | None = None,
    timeout_s: float | None = None,
    gpus: tuple[int, ...] | None = None,
    runner: str | None = None,
    wait_for_gpus: bool = True,
    **overrides: Any,
) -> ExperimentResult:
    """Run one experiment once (a YAML path, a mapping or an ExperimentConfig) and return
    its result; overrides replace experiment keys (batch_size=8, ...). Raises
    ExperimentFailedError when it fails."""
    given = Overrides(
        face="api",
        output_dir=Path(output_dir) if output_dir is not None else None,
        runner=_runner_choice(runner),
        timeout_s=timeout_s,
        gpus=gpus,
        wait_for_gpus=wait_for_gpus,
    )
    if isinstance(config_or_path, (str, Path)):
        path = Path(config_or_path)
        plan = plan_campaign(lambda _keys, _limit: load_experiment(path, overrides), given)
    else:
        data = _as_data(config_or_path)
        plan = plan_campaign(
            lambda _keys, _limit: experiment_from_data(data, Path.cwd(), overrides), given
        )
    outcome = _run(plan, None)
    (entry,) = outcome.manifest.entries
    if entry.status != "done":
        raise ExperimentFailedError(
            f"experiment {entry.experiment_id} failed: {entry.error} "
            f"(details in {outcome.campaign_dir / Path(entry.exp_path).parent})"
        )
    return outcome.results[0]


@library_words
def resume(
    campaign_dir: str | Path | None = None,
    *,
    results_dir: str | Path | None = None,
    events: Events | None = None,
    runner: str | None = None,
    timeout_s: float | None = None,
    retries: int | None = None,
    gpus: tuple[int, ...] | None = None,
    retry_failed: bool = False,
    force_unlock: bool = False,
    wait_for_gpus: bool = True,
) -> CampaignResults:
    """Finish a campaign with the settings it recorded; arguments given here replace them
    (and are recorded). Finished results are never redone. force_unlock: take over a lock
    that names another machine (only once no orchestrator runs it there). campaign_dir None:
    the newest unfinished campaign under results_dir (default: the user settings'), as `lem
    resume` picks it; a campaign there whose manifest cannot be read is logged, or raised if it
    is the only one."""
    given_dir = Path(campaign_dir) if campaign_dir is not None else None
    root_dir = Path(results_dir) if results_dir is not None else None
    root, found = resumable(given_dir, root_dir, retry_failed, log.warning)
    if found is None:
        raise ConfigError(f"nothing to resume: no unfinished campaign under {root}/")
    given = Overrides(
        face="api",
        runner=_runner_choice(runner),
        timeout_s=timeout_s,
        retries=retries,
        gpus=gpus,
        retry_failed=retry_failed,
        force_unlock=force_unlock,
        wait_for_gpus=wait_for_gpus,
    )
    return _run(plan_resume(found.campaign_dir, given), events)


@library_words
def load_results(campaign_dir: str | Path, group_by: list[str] | None = None) -> CampaignResults:
    """Read a campaign directory (finished or not). group_by overrides the campaign's own
    grouping for the summary (e.g. ["batch_size"]); the files on disk are not changed."""
    directory = Path(campaign_dir)
    manifest = load_manifest(directory)
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


class _LoggedNotices(Events):
    """Without events of the caller's, notices still reach the user as the CLI prints them:
    a call waiting for a device another campaign holds says so, and who holds it."""

    def notice(self, message: str) -> None:
        log.warning(message)


def _run(plan: Plan, events: Events | None) -> CampaignResults:
    with no_world_write():
        summary = execute(plan, events or _LoggedNotices(), log.warning)
    if summary.interrupted:
        raise KeyboardInterrupt
    return load_results(summary.campaign_dir)


def _runner_choice(runner: str | None) -> RunnerChoice | None:
    choices = get_args(RunnerChoice)
    if runner is not None and runner not in choices:
        raise ConfigError(f"runner {runner!r}: expected one of {', '.join(choices)}")
    return cast("RunnerChoice | None", runner)


def _as_data(config: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(config, (CampaignConfig, ExperimentConfig)):
        return config.model_dump(mode="json", exclude_unset=True)
    if isinstance(config, Mapping):
        return dict(config)
    raise ConfigError(
        f"expected a YAML path, a mapping, a CampaignConfig or an ExperimentConfig; "
        f"got {type(config).__name__}"
    )
