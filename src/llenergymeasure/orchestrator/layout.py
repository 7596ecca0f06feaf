"""Lay out a new campaign directory: experiments.json and a manifest of pending entries.

Layout of a campaign directory:
    campaign.yaml                 copy of the file it was started from
    experiments.json              every experiment's config (see experiments.py)
    manifest.json                 state (see manifest.py), with manifest.journal: changes since
    lem.lock                      while an orchestrator runs it (see lock.py)
    <experiment_id>/cycle-<n>/    exp.json (written when it runs), worker.log, result.json |
                                  error.json
    results.csv, results.parquet  one row per experiment and cycle
    summary.csv, summary.parquet  statistics across cycles (results/aggregate.py)
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import yaml

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.campaign import SECRET_SECTIONS
from llenergymeasure.config.experiment import config_hash
from llenergymeasure.config.grid import Campaign, PlannedExperiment
from llenergymeasure.config.settings import UserSettings, load_settings, resolve_settings
from llenergymeasure.contract import EXP_FILE
from llenergymeasure.datasets.select import check_available
from llenergymeasure.errors import ConfigError
from llenergymeasure.gc_pause import gc_paused
from llenergymeasure.orchestrator.experiments import write_experiments
from llenergymeasure.orchestrator.manifest import (
    Manifest,
    ManifestEntry,
    ManifestStore,
    SkippedEntry,
    utcnow,
)
from llenergymeasure.orchestrator.preflight import (
    check_energy_sources,
    check_models,
    check_servers,
)
from llenergymeasure.orchestrator.schedule import resolve_execution, run_order
from llenergymeasure.redact import redact
from llenergymeasure.results.schema import schema_fingerprint


def create_campaign(
    campaign: Campaign,
    output_root: Path | None = None,
    *,
    default_cycles: int = 1,
    settings: UserSettings | None = None,
    runner_name: str | None = None,
) -> Path:
    """Make the campaign directory: experiments.json and a manifest of pending entries, in the
    order they will run (each exp.json is written when its entry runs). default_cycles
    applies where the file sets no `cycles` (the conductor passes its one default); settings
    are the resolved ones (default: `.lem-config.yaml` and the environment resolved against
    the campaign); runner_name: the runner picked for it (recorded in each entry)."""
    if settings is None:
        settings = resolve_settings(load_settings(), campaign.config)
    execution = resolve_execution(campaign.config, settings)
    _check_prompts(campaign)
    check_models(campaign)
    check_servers(campaign)
    check_energy_sources(campaign, runner_name or settings.runner)
    root = Path(output_root or campaign.config.output_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    campaign_id = f"{campaign.config.name}_{stamp}"
    campaign_dir = root / campaign_id
    suffix = 1
    while campaign_dir.exists():
        suffix += 1
        campaign_dir = root / f"{campaign_id}-{suffix}"
    campaign_id = campaign_dir.name
    try:
        campaign_dir.mkdir(parents=True)
    except OSError as e:
        raise ConfigError(f"cannot create campaign directory {campaign_dir}: {e}") from e
    campaign_dir = campaign_dir.resolve()
    given = campaign.config.model_dump(mode="json", exclude_unset=True)
    secret = {k: given[k] for k in SECRET_SECTIONS if k in given}
    if campaign.source is not None and redact(secret) == secret:
        shutil.copyfile(campaign.source, campaign_dir / "campaign.yaml")
    else:  # given as data, or holding secrets: what was given (redacted), as a file that
        # `lem campaign` could run
        given |= redact(secret)
        text = yaml.safe_dump(given, sort_keys=False)
        write_text_atomic(campaign_dir / "campaign.yaml", text)

    with gc_paused():  # 100,000 entries: see gc_pause.py
        write_experiments(campaign_dir, campaign.base_dir, campaign.experiments)
        fingerprint = schema_fingerprint()
        cycles = campaign.config.cycles or default_cycles
        order = run_order(len(campaign.experiments), cycles, execution.order, execution.order_seed)
        runner = runner_name or settings.runner or "auto"
        entries = [
            ManifestEntry(
                experiment_id=exp.experiment_id,
                cycle=cycle,
                backend=exp.config.backend,
                label=exp.label,
                runner=runner,
                exp_path=f"{exp.experiment_id}/cycle-{cycle}/{EXP_FILE}",
            )
            for exp, cycle in ((campaign.experiments[i], c) for i, c in order)
        ]
        now = utcnow()
        manifest = Manifest(
            campaign_id=campaign_id,
            campaign_name=campaign.config.name,
            config_hash=config_hash(
                {
                    "campaign": campaign.config.model_dump(mode="json"),
                    "experiments": [e.experiment_id for e in campaign.experiments],
                }
            ),
            schema_fingerprint=fingerprint,
            created_at=now,
            updated_at=now,
            total_cycles=cycles,
            timeout_s=campaign.config.timeout_s,
            retries=campaign.config.retries,
            execution=execution,
            runner_choice=campaign.config.runner,
            cold_start=campaign.config.cold_start,
            entries=entries,
            skipped=[SkippedEntry(label=s.label, reason=s.reason) for s in campaign.skipped],
        )
        ManifestStore(campaign_dir).save(manifest)
    return campaign_dir


def _check_prompts(campaign: Campaign) -> None:
    """Each prompt source must hold the most prompts any experiment asks of it: checked once per
    source, not once per experiment (a source may be a file to read)."""
    most: dict[tuple[str, str | None, int | None], PlannedExperiment] = {}
    for exp in campaign.experiments:
        prompts = exp.config.prompts
        source = (prompts.source, prompts.path, prompts.input_tokens)
        if source not in most or exp.config.n_prompts > most[source].config.n_prompts:
            most[source] = exp
    for exp in most.values():
        check_available(exp.config, campaign.base_dir)
