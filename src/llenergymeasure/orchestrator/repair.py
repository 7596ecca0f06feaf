"""`lem repair`: rebuild a campaign's manifest.json from what survives beside it.

A manifest cut short (a full disk, a copy interrupted) or overwritten with garbage would leave
every finished result unreadable as a campaign, though the results are intact. The rebuild
takes, in order of trust:

1. the result files: a complete result.json makes its entry done, whatever anything else says;
   an error.json (no result) makes it failed, oom or interrupted, as the worker recorded it;
   an exp.json alone is an attempt that left nothing (its orchestrator died): interrupted;
2. manifest.journal: the latest recorded state of each entry it names;
3. what of the damaged manifest still parses (a truncated file keeps its head: the settings,
   the order seed, the first entries); its last, possibly cut, part is not trusted;
4. experiments.json (which experiments exist), each exp.json (cycles, time limit, campaign id)
   and campaign.yaml (labels, cycles, retries, order).

What none of them holds is named in the report (e.g. the user settings it ran with). The
damaged files are kept beside the new one, renamed, never deleted.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from llenergymeasure.config.campaign import DEFAULT_CYCLES, Execution
from llenergymeasure.config.experiment import config_hash
from llenergymeasure.config.grid import (
    HARD_MAX_EXPERIMENTS,
    Campaign,
    load_campaign,
    load_experiment,
)
from llenergymeasure.config.settings import load_settings, resolve_settings
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import ERROR_FILE, EXP_FILE, RESULT_FILE
from llenergymeasure.errors import ConfigError, LemError
from llenergymeasure.orchestrator.entries import complete_result, end_attempt, recover
from llenergymeasure.orchestrator.experiments import ExperimentSpecs
from llenergymeasure.orchestrator.lock import CampaignLock
from llenergymeasure.orchestrator.manifest import (
    JOURNAL_FILE,
    AttemptStatus,
    Manifest,
    ManifestEntry,
    ManifestStore,
    SkippedEntry,
    _JournalRecord,
    result_missing,
    utcnow,
)
from llenergymeasure.orchestrator.names import EXPERIMENTS_FILE, MANIFEST_FILE
from llenergymeasure.orchestrator.schedule import resolve_execution, run_order
from llenergymeasure.results.schema import ErrorRecord, schema_fingerprint

CAMPAIGN_FILE = "campaign.yaml"
UNKNOWN_RUNNER = "unknown"
STAMP = re.compile(r"_(\d{8}T\d{6}Z)(?:-\d+)?$")
ERROR_STATUS: dict[str, AttemptStatus] = {"oom": "oom", "interrupted": "interrupted"}
LOST_REASON = "its orchestrator stopped while it ran (found by lem repair); no result"


@dataclass
class RepairReport:
    """What `lem repair` did: the counts of the rebuilt manifest (None: it was readable, so
    nothing was done), where each part came from, and what could not be recovered."""

    campaign_dir: Path
    manifest: Manifest | None = None
    sources: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    """The damaged files, renamed beside the new manifest."""

    def lines(self) -> list[str]:
        """The report as the CLI prints it."""
        path = self.campaign_dir / MANIFEST_FILE
        if self.manifest is None:
            return [f"{path} is readable: nothing to repair"]
        out = [
            f"Rebuilt {path}: {len(self.manifest.entries)} entries ({self.manifest.counts_text()})",
            *(f"  from {source}" for source in self.sources),
        ]
        out += [f"  kept the damaged file as {p.name}" for p in self.kept]
        if self.lost:
            out.append("Could not recover:")
            out += [f"  {what}" for what in self.lost]
        else:
            out.append("Nothing was lost.")
        if self.manifest.pending() or any(
            result_missing(self.campaign_dir, e) for e in self.manifest.entries
        ):
            out.append(f"To run what is not done: lem resume {self.campaign_dir}")
        return out


def needs_repair(campaign_dir: Path) -> str | None:
    """Why the campaign's manifest cannot be read (None: it can)."""
    try:
        ManifestStore(campaign_dir).load()
    except LemError as e:
        return str(e)
    return None


def repair_campaign(
    campaign_dir: Path, *, force_unlock: bool = False, notice: Callable[[str], None]
) -> RepairReport:
    """Rebuild manifest.json of campaign_dir (left alone when it is readable).
    Holds the campaign's lock meanwhile, so no orchestrator runs it as it is rebuilt."""
    campaign_dir = campaign_dir.resolve()
    if not (campaign_dir / EXPERIMENTS_FILE).is_file():
        raise ConfigError(
            f"{campaign_dir} has no {EXPERIMENTS_FILE}: it is not a campaign directory (or one "
            "made by an older llenergymeasure), so there is nothing to rebuild a manifest from"
        )
    with CampaignLock(campaign_dir, force=force_unlock, notice=notice):
        if needs_repair(campaign_dir) is None:
            return RepairReport(campaign_dir)
        return _Rebuild(campaign_dir).run()


class _Rebuild:
    def __init__(self, campaign_dir: Path) -> None:
        self.dir = campaign_dir
        self.specs = ExperimentSpecs(campaign_dir)
        self.sources: list[str] = []
        self.lost: list[str] = []

    def run(self) -> RepairReport:
        ids = self._experiment_ids()
        salvage = self._salvage()
        journal = self._journal()
        campaign = self._campaign_file()
        files = {i: _EntryFiles.scan(self.dir / i) for i in ids}
        spec = next((s for f in files.values() for s in f.specs()), None)
        header = self._header(salvage, campaign, spec, files)
        entries = self._entries(ids, header, salvage, journal, campaign, files)
        manifest = Manifest(**header, entries=entries)
        kept = self._replace(manifest)
        return RepairReport(self.dir, manifest, self.sources, self.lost, kept)

    # -- what survives ---------------------------------------------------------------------

    def _experiment_ids(self) -> list[str]:
        try:
            ids = self.specs.experiment_ids()
        except ConfigError as e:
            raise ConfigError(f"cannot repair {self.dir}: {e}") from e
        self.sources.append(f"{EXPERIMENTS_FILE}: {len(ids)} experiments")
        return ids

    def _salvage(self) -> dict[str, Any]:
        """The top-level fields of the damaged manifest that still validate, each on its own;
        from a truncated file, its last field (or last entry) is dropped: it may be cut."""
        path = self.dir / MANIFEST_FILE
        try:
            text = path.read_bytes()
        except OSError:
            self.lost.append(f"{MANIFEST_FILE} is missing: nothing of it was kept")
            return {}
        try:
            data = pydantic_core.from_json(text)
        except ValueError:
            try:
                data = pydantic_core.from_json(text, allow_partial=True)
            except ValueError:
                data = None
            if isinstance(data, dict) and data:
                last = list(data)[-1]
                if last == "entries" and isinstance(data[last], list):
                    data[last] = data[last][:-1]
                else:
                    del data[last]
        if not isinstance(data, dict):
            self.lost.append(f"{MANIFEST_FILE} held nothing readable")
            return {}
        kept: dict[str, Any] = {}
        for name in Manifest.model_fields:
            if name not in data:
                continue
            if name == "entries":
                raw = data[name] if isinstance(data[name], list) else []
                kept[name] = [e for e in (_valid(ManifestEntry, r) for r in raw) if e is not None]
                continue
            try:
                kept[name] = _adapter(name).validate_python(data[name])
            except ValidationError:
                continue
        if kept:
            self.sources.append(
                f"the readable part of the damaged {MANIFEST_FILE}: "
                f"{len(kept) - ('entries' in kept)} fields, "
                f"{len(kept.get('entries', []))} entries"
            )
        return kept

    def _journal(self) -> dict[str, ManifestEntry]:
        """The last state the journal recorded for each entry; torn or foreign lines are
        skipped (the result files decide those entries)."""
        try:
            lines = (self.dir / JOURNAL_FILE).read_bytes().split(b"\n")
        except OSError:
            return {}
        found: dict[str, ManifestEntry] = {}
        for line in lines[1:]:
            record = _valid(_JournalRecord, line) if line.strip() else None
            if record is not None:
                found[record.entry.key] = record.entry
        if found:
            self.sources.append(f"{JOURNAL_FILE}: {len(found)} entries")
        return found

    def _campaign_file(self) -> Campaign | None:
        path = self.dir / CAMPAIGN_FILE
        errors = []
        loaders: list[Callable[[Path], Campaign]] = [
            lambda p: load_campaign(p, max_experiments=HARD_MAX_EXPERIMENTS),
            load_experiment,
        ]
        for load in loaders:
            try:
                return load(path)
            except LemError as e:
                errors.append(str(e).splitlines()[0])
        self.lost.append(
            f"{CAMPAIGN_FILE} could not be read ({errors[0]}): experiment labels and the "
            "campaign's own keys come from the other files only"
        )
        return None

    # -- the rebuilt manifest --------------------------------------------------------------

    def _header(
        self,
        salvage: dict[str, Any],
        campaign: Campaign | None,
        spec: ExperimentSpec | None,
        files: dict[str, _EntryFiles],
    ) -> dict[str, Any]:
        config = campaign.config if campaign is not None else None
        lost = self.lost
        header = {k: v for k, v in salvage.items() if k not in {"entries", "updated_at"}}

        def pick(name: str, *candidates: Any, what: str | None = None) -> None:
            if name in header:
                return
            value = next((c for c in candidates if c is not None), None)
            if value is None:
                if what is not None:
                    lost.append(what)
                return
            header[name] = value

        stamp = STAMP.search(self.dir.name)
        pick("campaign_id", spec.campaign_id if spec else None, self.dir.name)
        pick(
            "campaign_name",
            spec.campaign_name if spec else None,
            config.name if config else None,
            STAMP.sub("", self.dir.name),
        )
        pick("schema_fingerprint", spec.schema_fingerprint if spec else None, schema_fingerprint())
        pick(
            "created_at",
            datetime.strptime(stamp.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            if stamp
            else None,
            datetime.fromtimestamp((self.dir / EXPERIMENTS_FILE).stat().st_mtime, timezone.utc),
        )
        seen_cycles = max((c for f in files.values() for c in f.cycles), default=None)
        if "total_cycles" not in header and spec is None and (config is None or not config.cycles):
            lost.append(
                f"the number of cycles: no file records it; set to {seen_cycles or DEFAULT_CYCLES}"
            )
        pick(
            "total_cycles",
            spec.total_cycles if spec else None,
            config.cycles if config else None,
            seen_cycles,
            DEFAULT_CYCLES,
        )
        pick("timeout_s", spec.time_limit_s if spec else None, config.timeout_s if config else None)
        pick("retries", config.retries if config else None)
        pick("runner_choice", config.runner if config else None)
        pick("cold_start", config.cold_start if config else None)
        if "config_hash" not in header and config is not None and campaign is not None:
            header["config_hash"] = config_hash(
                {
                    "campaign": config.model_dump(mode="json"),
                    "experiments": [e.experiment_id for e in campaign.experiments],
                }
            )
        header.setdefault("config_hash", "unknown")
        if "execution" not in header:
            header["execution"] = self._execution(campaign)
        elif header["execution"].settings is None:
            lost.append(self._settings_lost())
        if "skipped" not in header and campaign is not None:
            header["skipped"] = [
                SkippedEntry(label=s.label, reason=s.reason) for s in campaign.skipped
            ]
        if "timeout_s" not in header:
            raise ConfigError(
                f"cannot repair {self.dir}: no surviving file records the campaign's timeout_s "
                f"(no exp.json ran, {CAMPAIGN_FILE} unreadable)"
            )
        header["updated_at"] = utcnow()
        return header

    def _execution(self, campaign: Campaign | None) -> Execution:
        """How the campaign runs, from campaign.yaml and today's settings; the settings it was
        created with are not recorded anywhere else."""
        self.lost.append(self._settings_lost())
        if campaign is None:
            raise ConfigError(
                f"cannot repair {self.dir}: neither the damaged {MANIFEST_FILE} nor "
                f"{CAMPAIGN_FILE} says how the campaign runs (order, gaps, statistics)"
            )
        settings = resolve_settings(load_settings(), campaign.config)
        execution = resolve_execution(campaign.config, settings)
        if campaign.config.order == "shuffled" and campaign.config.order_seed is None:
            self.lost.append(
                f"the shuffled order's seed: what is left runs in a new order (seed "
                f"{execution.order_seed})"
            )
        return execution.model_copy(update={"settings": None})

    @staticmethod
    def _settings_lost() -> str:
        return (
            "the user settings it ran with (runner, results_dir, gpus, pue, carbon intensity, "
            "gaps): `lem resume` uses the current ones"
        )

    def _entries(
        self,
        ids: list[str],
        header: dict[str, Any],
        salvage: dict[str, Any],
        journal: dict[str, ManifestEntry],
        campaign: Campaign | None,
        files: dict[str, _EntryFiles],
    ) -> list[ManifestEntry]:
        execution: Execution = header["execution"]
        cycles: int = header["total_cycles"]
        known = {e.key: e for e in salvage.get("entries", [])}
        known.update(journal)
        labels = {e.experiment_id: e.label for e in campaign.experiments} if campaign else {}
        if campaign is not None and set(labels) != set(ids):
            labels = {}
            self.lost.append(
                f"experiment labels: {CAMPAIGN_FILE} no longer expands to the experiments of "
                f"{EXPERIMENTS_FILE}"
            )
        # The runner of entries known only from their files: the one the known entries ran
        # with (most of them), else the campaign file's choice.
        ran = Counter(e.runner for e in known.values() if e.attempts)
        runner = ran.most_common(1)[0][0] if ran else header.get("runner_choice")
        runner = str(runner or UNKNOWN_RUNNER)
        stub = Manifest.model_construct(**header, entries=[])
        pairs = run_order(len(ids), cycles, execution.order, execution.order_seed)
        # Known entries keep their place; the rest follow in the campaign's own order.
        order = sorted(
            ((ids[i], c) for i, c in pairs), key=lambda k: f"{k[0]}/cycle-{k[1]}" not in known
        )
        entries: list[ManifestEntry] = []
        rebuilt_from_files = 0
        for experiment_id, cycle in order:
            key = f"{experiment_id}/cycle-{cycle}"
            entry = known.get(key)
            found = files[experiment_id].at(cycle)
            if entry is None or (entry.status != "done" and found.attempt > entry.attempts):
                # Unknown, or the files saw a later attempt than the surviving record.
                entry = ManifestEntry(
                    experiment_id=experiment_id,
                    cycle=cycle,
                    backend=self.specs.config(experiment_id).backend,
                    label=entry.label if entry else labels.get(experiment_id, {}),
                    runner=entry.runner if entry else runner,
                    exp_path=f"{key}/{EXP_FILE}",
                )
                rebuilt_from_files += _from_files(self.dir, stub, entry, found)
            elif not recover(self.dir, stub, entry) and entry.status == "running":
                end_attempt(entry, "lost", LOST_REASON, final="interrupted")
            entries.append(entry)
        if rebuilt_from_files:
            self.sources.append(
                f"result.json/error.json/exp.json files: {rebuilt_from_files} entries"
            )
            self.lost.append(
                f"for the {rebuilt_from_files} entries known only from their files: earlier "
                f"attempts, container or job ids, and the orchestrator's own start and end "
                f"times (the worker's are used); runner recorded as {runner}"
            )
        extra = sorted(f"{i}/cycle-{c}" for i, f in files.items() for c in f.cycles if c > cycles)
        if extra:
            self.lost.append(
                f"{len(extra)} cycle directories beyond the campaign's {cycles} cycles were left "
                f"out: {', '.join(extra[:3])}"
            )
        return entries

    def _replace(self, manifest: Manifest) -> list[Path]:
        """Keep the damaged files under new names, then save the rebuilt manifest."""
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        kept = []
        for name in (MANIFEST_FILE, JOURNAL_FILE):
            path = self.dir / name
            if path.exists():
                kept.append(path.with_name(f"{name}.damaged-{stamp}"))
                path.replace(kept[-1])
        ManifestStore(self.dir).save(manifest)
        return kept


@dataclass
class _Cycle:
    spec: ExperimentSpec | None
    error: ErrorRecord | None

    @property
    def attempt(self) -> int:
        """The latest attempt these files record (0: none)."""
        return max(
            self.spec.attempt if self.spec else 0,
            (self.error.attempt or 0) if self.error else 0,
        )


@dataclass
class _EntryFiles:
    """What one experiment's cycle directories hold."""

    found: dict[int, _Cycle]

    @classmethod
    def scan(cls, directory: Path) -> _EntryFiles:
        found: dict[int, _Cycle] = {}
        for cycle_dir in directory.glob("cycle-*"):
            number = cycle_dir.name.removeprefix("cycle-")
            if not number.isdigit():
                continue
            found[int(number)] = _Cycle(
                _read(ExperimentSpec, cycle_dir / EXP_FILE),
                _read(ErrorRecord, cycle_dir / ERROR_FILE),
            )
        return cls(found)

    @property
    def cycles(self) -> list[int]:
        return list(self.found)

    def specs(self) -> list[ExperimentSpec]:
        return [c.spec for c in self.found.values() if c.spec is not None]

    def at(self, cycle: int) -> _Cycle:
        return self.found.get(cycle, _Cycle(None, None))


def _from_files(campaign_dir: Path, stub: Manifest, entry: ManifestEntry, found: _Cycle) -> int:
    """Set a fresh entry's state from its files: a complete result.json (done), else an
    error.json (as the worker classed it), else a lone exp.json (an attempt that left nothing:
    interrupted). 1 when the files said anything."""
    result = complete_result((campaign_dir / entry.exp_path).parent, stub, entry)
    if result is not None:
        entry.attempts, entry.started_at = result.attempt, result.started_at
        entry.result_path = str(Path(entry.exp_path).parent / RESULT_FILE)
        end_attempt(entry, "done", "rebuilt by lem repair from result.json")
        entry.error, entry.finished_at = None, result.finished_at
        entry.attempt_history[-1].finished_at = result.finished_at
        return 1
    if found.error is not None:
        entry.attempts = found.error.attempt or found.attempt or 1
        status = ERROR_STATUS.get(found.error.category, "failed")
        reason = found.error.message.splitlines()[0] if found.error.message else None
        end_attempt(entry, status, reason)
        entry.finished_at = entry.attempt_history[-1].finished_at = found.error.at
        return 1
    if found.spec is not None:
        entry.attempts = found.spec.attempt
        end_attempt(entry, "lost", LOST_REASON, final="interrupted")
        return 1
    return 0


def _valid(model: type[BaseModel], data: Any) -> Any:
    try:
        if isinstance(data, bytes | str):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError:
        return None


def _read(model: type[BaseModel], path: Path) -> Any:
    try:
        return _valid(model, path.read_bytes())
    except OSError:
        return None


@functools.cache
def _adapter(name: str) -> TypeAdapter[Any]:
    """A validator for one manifest field on its own."""
    annotation: Any = Manifest.model_fields[name].annotation
    return TypeAdapter(annotation)
