"""experiments.json: every experiment's config, written once when a campaign is created.

A worker's exp.json is derived from it (and the manifest) only when its entry is about to run,
so creating a campaign is a fixed number of file writes however large the grid: 100,000
experiments used to mean 100,000 exp.json files before anything ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.grid import PlannedExperiment
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.orchestrator.names import EXPERIMENTS_FILE

CACHE_DIR = ".cache"


class _ExperimentsFile(BaseModel):
    base_dir: str
    configs: dict[str, ExperimentConfig]


def write_experiments(
    campaign_dir: Path, base_dir: Path, experiments: Iterable[PlannedExperiment]
) -> None:
    """Store each config as the keys it was given (exclude_unset): validating that again gives
    the same config, which reading checks against the experiment id. Serialised in one call
    (pydantic-core): per-config dumps were a third of creating a 100,000-experiment campaign."""
    data = _ExperimentsFile(
        base_dir=str(base_dir), configs={e.experiment_id: e.config for e in experiments}
    )
    text = data.model_dump_json(exclude_unset=True)
    write_text_atomic(campaign_dir / EXPERIMENTS_FILE, text)


class ExperimentSpecs:
    """The configs of one campaign directory, read once, and the exp.json of each entry."""

    def __init__(self, campaign_dir: Path) -> None:
        self.campaign_dir = campaign_dir
        self.path = campaign_dir / EXPERIMENTS_FILE
        self._raw: dict[str, Any] | None = None
        self._configs: dict[str, ExperimentConfig] = {}

    @property
    def base_dir(self) -> Path:
        """The campaign file's directory: relative paths in configs start there."""
        return Path(self._data()["base_dir"])

    def experiment_ids(self) -> list[str]:
        """Every experiment of the campaign, in the order it was planned."""
        return list(self._data()["configs"])

    def config(self, experiment_id: str) -> ExperimentConfig:
        """The validated config of one experiment; its id must hash to experiment_id."""
        config = self._configs.get(experiment_id)
        if config is not None:
            return config
        raw = self._data()["configs"].get(experiment_id)
        if raw is None:
            raise ConfigError(f"{self.path} has no config for experiment {experiment_id}")
        try:  # through JSON, exactly as a worker reads exp.json
            config = ExperimentConfig.model_validate_json(json.dumps(raw))
        except ValidationError as e:
            raise ConfigError(f"{self.path}: the config of {experiment_id} is invalid: {e}") from e
        if config.experiment_id() != experiment_id:
            raise ConfigError(
                f"{self.path}: the config stored for {experiment_id} is that of "
                f"{config.experiment_id()}; the file was edited or comes from another version"
            )
        self._configs[experiment_id] = config
        return config

    def spec(self, manifest: Manifest, entry: ManifestEntry, attempt: int) -> ExperimentSpec:
        """What the worker of this entry's attempt reads, with the campaign directory where it
        is now (it may have moved since the campaign was created)."""
        here = self.campaign_dir.resolve()
        return ExperimentSpec(
            schema_fingerprint=manifest.schema_fingerprint,
            experiment_id=entry.experiment_id,
            campaign_id=manifest.campaign_id,
            campaign_name=manifest.campaign_name,
            cycle=entry.cycle,
            total_cycles=manifest.total_cycles,
            attempt=attempt,
            output_dir=str((here / entry.exp_path).parent),
            base_dir=str(self.base_dir),
            cache_dir=str(here / CACHE_DIR),
            config=self.config(entry.experiment_id),
            time_limit_s=manifest.timeout_s,
        )

    def write_spec(self, manifest: Manifest, entry: ManifestEntry, attempt: int) -> Path:
        """Write the entry's exp.json for this attempt; returns its path."""
        path = self.campaign_dir / entry.exp_path
        write_text_atomic(path, self.spec(manifest, entry, attempt).model_dump_json(indent=2))
        return path

    def _data(self) -> dict[str, Any]:
        if self._raw is None:
            try:
                data = json.loads(self.path.read_bytes())
            except FileNotFoundError as e:
                raise ConfigError(
                    f"{self.campaign_dir} has no {EXPERIMENTS_FILE}: it was created by an "
                    "older llenergymeasure; finish it with that version"
                ) from e
            except (OSError, ValueError) as e:
                raise ConfigError(f"{self.path} is unreadable: {e}") from e
            if not (isinstance(data, dict) and isinstance(data.get("configs"), dict)):
                raise ConfigError(f"{self.path} is not an experiments file (no `configs`)")
            self._raw = data
        return self._raw
