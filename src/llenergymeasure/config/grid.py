"""Grid expansion: a campaign file -> the validated list of experiments it describes.

Rules (they decide what gets measured, so none of them fails silently):
- a universal key (`batch_size`, `decoding.temperature`) is a dimension of every backend's grid;
- `backend: [...]` picks the backends; each backend gets its own Cartesian product;
- `<backend>.<key>` (e.g. `pytorch.batch_size`) is a dimension of that backend's grid only, and
  naming a backend the campaign does not run is an error;
- explicit `experiments:` are merged over `base` and added after the grid;
- two entries with the same effective config are one experiment (reported, not dropped quietly);
- a grid combination a backend cannot run (config/capabilities.py) is an error naming it and
  what the backend supports, or, with `skip_invalid: true`, is listed in `Campaign.skipped`;
- a campaign of more than `max_experiments` experiments (counted before anything is expanded,
  so a grid of 10^20 points costs nothing) is refused until the user confirms it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from llenergymeasure.config.campaign import SECRET_SECTIONS, CampaignConfig
from llenergymeasure.config.capabilities import UNSUPPORTED_VALUE
from llenergymeasure.config.descriptor import DEFAULT_BACKEND, backend_names, descriptor
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.loader import (
    MAX_PROMPT_FILE_BYTES,
    Locator,
    PathPart,
    YamlDocument,
    check_regular_file,
    explain_validation_error,
    read_yaml,
)
from llenergymeasure.errors import ConfigError, Option, printable
from llenergymeasure.flatten import flatten
from llenergymeasure.gc_pause import gc_paused

KNOWN_BACKENDS: tuple[str, ...] = backend_names()
DEFAULT_MAX_EXPERIMENTS = 10_000
"""Experiments a campaign may expand to without confirmation (`--yes`, or `max_experiments`
in .lem-config.yaml)."""
HARD_MAX_EXPERIMENTS = 1_000_000
"""Beyond this even a confirmed campaign is refused: its manifest alone would be hundreds of MB."""


class TooManyExperimentsError(ConfigError):
    """The campaign expands to more experiments than allowed; `count` says how many."""

    def __init__(self, message: str, count: int, options: tuple[Option, ...] = ()) -> None:
        super().__init__(message, options=options)
        self.count = count


@dataclass(frozen=True)
class PlannedExperiment:
    """One expanded experiment: its validated config, stable id and what makes it distinct."""

    config: ExperimentConfig
    experiment_id: str
    label: dict[str, Any]


@dataclass(frozen=True)
class SkippedExperiment:
    """A grid combination left out because its backend cannot run it (skip_invalid: true)."""

    label: dict[str, Any]
    reason: str

    def describe(self) -> str:
        return f"{_describe(self.label)}: {self.reason}"


@dataclass(frozen=True)
class Campaign:
    """A loaded campaign file: validated top level, expanded experiments, notices for the user."""

    config: CampaignConfig
    experiments: list[PlannedExperiment]
    source: Path | None
    """The file it was read from; None when given as data (the library API)."""
    base_dir: Path
    notices: list[str] = field(default_factory=list)
    skipped: list[SkippedExperiment] = field(default_factory=list)


@dataclass(frozen=True)
class _Dimension:
    key: str
    path: tuple[str, ...]
    values: list[Any]


def load_campaign(
    path: Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    max_experiments: int = DEFAULT_MAX_EXPERIMENTS,
) -> Campaign:
    """Read, validate and expand a campaign file; any problem is a ConfigError. overrides
    replace top-level keys of the file (CLI flags, library arguments)."""
    doc = read_yaml(path, what="campaign file")
    _check_output_dir(doc)
    base_dir = path.resolve().parent
    return _campaign(doc, overrides, source=path, base_dir=base_dir, limit=max_experiments)


def campaign_from_data(
    data: Mapping[str, Any],
    base_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    max_experiments: int = DEFAULT_MAX_EXPERIMENTS,
) -> Campaign:
    """A campaign given as data (the library API), checked exactly like a file."""
    doc = YamlDocument(path=Path("<campaign argument>"), data=dict(data), node=None)
    return _campaign(doc, overrides, source=None, base_dir=base_dir, limit=max_experiments)


def _check_output_dir(doc: YamlDocument) -> None:
    """A campaign file is shared and re-run by others: its `output_dir` may only name a folder
    under the working directory. Other places are the runner's choice (-o, LEM_OUTPUT_DIR,
    results_dir in .lem-config.yaml)."""
    value = doc.data.get("output_dir")
    if not isinstance(value, str):
        return  # validation says what is wrong with it
    parts = PurePosixPath(value).parts
    if value.startswith(("/", "~")) or ".." in parts:
        raise ConfigError(
            f"{doc.where(('output_dir',))}: output_dir in a campaign file must be a folder "
            f"under the working directory (relative, no '..'), got "
            f"{printable(repr(value), 80)}; to write elsewhere use {{0}}, "
            "LEM_OUTPUT_DIR or results_dir in .lem-config.yaml",
            options=(Option("output_dir"),),
        )


def _campaign(
    doc: YamlDocument,
    overrides: Mapping[str, Any] | None,
    source: Path | None,
    base_dir: Path,
    limit: int,
) -> Campaign:
    if overrides:
        check_overrides(overrides)
        doc = dataclasses.replace(doc, data={**doc.data, **overrides})
    try:
        config = CampaignConfig.model_validate(doc.data)
    except ValidationError as e:
        raise explain_validation_error(e, CampaignConfig, doc, secret=SECRET_SECTIONS) from e
    check_size(config, doc, limit)
    experiments, notices, skipped = expand(config, doc)
    files = {e.config.prompts.file(base_dir) for e in experiments} - {None}
    for file in sorted(f for f in files if f is not None):  # a dry run reads none of them
        check_regular_file(file, "prompt file", MAX_PROMPT_FILE_BYTES, "a JSONL file")
    return Campaign(
        config,
        experiments,
        source=source,
        base_dir=base_dir,
        notices=notices,
        skipped=skipped,
    )


def count_experiments(config: CampaignConfig) -> int:
    """Experiments the campaign expands to (before duplicates merge or unsupported grid points
    are skipped), computed without expanding anything."""
    count = len(config.experiments or [])
    grid = config.grid
    if grid is None:
        return count or 1
    backends = grid.get("backend", [config.base.get("backend", DEFAULT_BACKEND)])
    for backend in backends:
        sizes = [
            len(values)
            for key, values in grid.items()
            if key != "backend"
            and (key.partition(".")[0] not in KNOWN_BACKENDS or key.partition(".")[0] == backend)
        ]
        count += math.prod(sizes)
    return count


def check_size(config: CampaignConfig, doc: YamlDocument, limit: int) -> None:
    """Refuse a campaign of more than `limit` experiments (never more than
    HARD_MAX_EXPERIMENTS), saying how many and how to go ahead."""
    count = count_experiments(config)
    if count > HARD_MAX_EXPERIMENTS:
        raise TooManyExperimentsError(
            f"{doc.path}: the campaign expands to {count:,} experiments; lem runs at most "
            f"{HARD_MAX_EXPERIMENTS:,} in one campaign. Check the grid (each list multiplies "
            "the others) or split the campaign",
            count,
        )
    if count > limit:
        raise TooManyExperimentsError(
            f"{doc.path}: the campaign expands to {count:,} experiments, more than "
            f"max_experiments ({limit:,}). Check the grid (each list multiplies the others); "
            "to run them all, pass {0} (or raise max_experiments in .lem-config.yaml)",
            count,
            options=(Option("allow_large", True),),
        )


def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Each override on its own must be a valid top-level campaign key and value."""
    try:
        CampaignConfig.model_validate({"name": "overrides", **overrides})
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            key = str(err["loc"][0]) if err["loc"] else ""
            if key in overrides:
                problems.append(f"{key}={overrides[key]!r}: {err['msg']}")
        if problems:
            raise ConfigError("invalid override " + "; ".join(problems)) from e


def load_experiment(path: Path, overrides: Mapping[str, Any] | None = None) -> Campaign:
    """An experiment file (ExperimentConfig keys at the top level) as a campaign of one;
    overrides replace top-level keys of the file."""
    doc = read_yaml(path, what="experiment file")
    ok = set("._-")  # the campaign name pattern is ASCII-only
    name = "".join(c if (c.isascii() and c.isalnum()) or c in ok else "-" for c in path.stem)
    name = name[:64].lstrip("._-") or "run"
    return _experiment(doc, overrides, name, source=path, base_dir=path.resolve().parent)


def experiment_from_data(
    data: Mapping[str, Any], base_dir: Path, overrides: Mapping[str, Any] | None = None
) -> Campaign:
    """One experiment given as data (the library API) as a campaign of one."""
    doc = YamlDocument(path=Path("<experiment argument>"), data=dict(data), node=None)
    return _experiment(doc, overrides, "run", source=None, base_dir=base_dir)


def _experiment(
    doc: YamlDocument,
    overrides: Mapping[str, Any] | None,
    name: str,
    source: Path | None,
    base_dir: Path,
) -> Campaign:
    if overrides:
        doc = dataclasses.replace(doc, data={**doc.data, **overrides})
    config = CampaignConfig(name=name, base=doc.data, cycles=1)
    experiments, notices, _ = expand(config, doc, base_prefix=())
    return Campaign(config, experiments, source=source, base_dir=base_dir, notices=notices)


def expand(
    config: CampaignConfig, doc: YamlDocument, base_prefix: tuple[PathPart, ...] = ("base",)
) -> tuple[list[PlannedExperiment], list[str], list[SkippedExperiment]]:
    """All experiments of a campaign, in a stable order, validated, with duplicates merged,
    and the grid combinations skipped as unsupported (only with skip_invalid).

    base_prefix is where the base settings sit in the file (`base:` in a campaign file, the top
    level in an experiment file), so error messages point at the right key."""
    planned: list[PlannedExperiment] = []
    skipped: list[SkippedExperiment] = []
    if config.grid is not None:
        with gc_paused():
            expanded = _expand_grid(config, doc, base_prefix)
        for item in expanded:
            if isinstance(item, SkippedExperiment):
                skipped.append(item)
            else:
                planned.append(item)
        if not planned:
            raise ConfigError(
                f"{doc.path}: every grid combination was skipped as unsupported:\n  "
                + "\n  ".join(s.describe() for s in skipped)
            )
    for index, overlay in enumerate(config.experiments or []):
        data = _deep_merge(config.base, overlay)
        label = flatten(overlay)
        own: dict[tuple[str, ...], tuple[PathPart, ...]] = {
            tuple(k.split(".")): ("experiments", index, *k.split(".")) for k in label
        }
        planned.append(_validate(data, label, doc, _locator(own, base_prefix)))
    if config.grid is None and config.experiments is None:
        planned.append(_validate(dict(config.base), {}, doc, _locator({}, base_prefix)))

    unique: dict[str, PlannedExperiment] = {}
    notices: list[str] = []
    for exp in planned:
        first = unique.get(exp.experiment_id)
        if first is None:
            unique[exp.experiment_id] = exp
        else:
            notices.append(
                f"{_describe(exp.label)} has the same effective config as "
                f"{_describe(first.label)} ({exp.experiment_id}); it runs once"
            )
    return list(unique.values()), notices, skipped


def _expand_grid(
    config: CampaignConfig, doc: YamlDocument, base_prefix: tuple[PathPart, ...]
) -> list[PlannedExperiment | SkippedExperiment]:
    assert config.grid is not None
    grid = config.grid
    base_backend = config.base.get("backend", DEFAULT_BACKEND)
    backends: list[Any] = grid.get("backend", [base_backend])
    for i, backend in enumerate(backends):
        if backend not in KNOWN_BACKENDS:
            where = ("grid", "backend", i) if "backend" in grid else (*base_prefix, "backend")
            raise ConfigError(
                f"{doc.where(where)}: unknown backend {backend!r}; "
                f"expected one of: {', '.join(KNOWN_BACKENDS)}"
            )

    universal: list[_Dimension] = []
    scoped: dict[str, list[_Dimension]] = {b: [] for b in backends}
    for key, values in grid.items():
        if key == "backend":
            continue
        head, _, rest = key.partition(".")
        if head in KNOWN_BACKENDS and rest:
            if head not in scoped:
                raise ConfigError(
                    f"{doc.where(('grid', key))}: '{key}' is scoped to backend '{head}', "
                    f"which this campaign does not run (backends: {', '.join(backends)}); "
                    f"add '{head}' to `grid.backend` or remove the key"
                )
            scoped[head].append(_Dimension(key, _scoped_path(head, rest), values))
        else:
            universal.append(_Dimension(key, tuple(key.split(".")), values))

    planned: list[PlannedExperiment | SkippedExperiment] = []
    for backend in backends:
        dims = universal + scoped[backend]
        base = _for_backend(config.base, backend, backends)
        for combo in itertools.product(*(range(len(d.values)) for d in dims)):
            data = dict(base)  # _set_path copies what it changes: base stays as it is
            label: dict[str, Any] = {"backend": backend} if "backend" in grid else {}
            own: dict[tuple[str, ...], tuple[PathPart, ...]] = {}
            for dim, index in zip(dims, combo, strict=True):
                value = dim.values[index]
                _set_path(data, dim.path, value)
                label[dim.key] = value
                own[dim.path] = ("grid", dim.key, index)
            locate = _locator(own, base_prefix)
            planned.append(_validate_grid_point(data, label, doc, locate, config.skip_invalid))
    return planned


def _locator(
    own: dict[tuple[str, ...], tuple[PathPart, ...]], base_prefix: tuple[PathPart, ...]
) -> Locator:
    """Point a validation error at the grid value / explicit entry that set the key, else base."""

    def locate(loc: tuple[PathPart, ...]) -> tuple[PathPart, ...]:
        for path, source in own.items():
            if loc[: len(path)] == path:
                return source
        for path, source in own.items():
            if path[: len(loc)] == loc:  # a model-level error on a section the overlay set
                return source
        return (*base_prefix, *loc)

    return locate


def _scoped_path(backend: str, rest: str) -> tuple[str, ...]:
    """`pytorch.attn_implementation` -> the backend section; `pytorch.batch_size` -> the
    universal field, but only in that backend's grid."""
    parts = tuple(rest.split("."))
    if parts[0] in descriptor(backend).settings.model_fields:
        return (backend, *parts)
    return parts


def _for_backend(base: dict[str, Any], backend: str, backends: list[Any]) -> dict[str, Any]:
    """The base for one backend's grid: sections of the campaign's other backends are theirs."""
    data = copy.deepcopy(base)
    data["backend"] = backend
    for other in backends:
        if other != backend:
            data.pop(other, None)
    return data


SKIP_HINT = " (or set `skip_invalid: true` to skip combinations a backend does not support)"


def _validate(
    data: dict[str, Any],
    label: dict[str, Any],
    doc: YamlDocument,
    locate: Locator,
    unsupported_hint: str = "",
) -> PlannedExperiment:
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        context = f"in experiment {_describe(label)}" if label else ""
        if _unsupported_reason(e) is not None:
            context += unsupported_hint
        raise explain_validation_error(e, ExperimentConfig, doc, locate, context.strip()) from e
    return PlannedExperiment(config=config, experiment_id=config.experiment_id(), label=label)


def _validate_grid_point(
    data: dict[str, Any], label: dict[str, Any], doc: YamlDocument, locate: Locator, skip: bool
) -> PlannedExperiment | SkippedExperiment:
    """A grid point whose only fault is a value its backend does not support is skipped when
    the campaign allows it; every other fault is an error."""
    try:
        return _validate(data, label, doc, locate, "" if skip else SKIP_HINT)
    except ConfigError as e:
        cause = e.__cause__
        reason = _unsupported_reason(cause) if isinstance(cause, ValidationError) else None
        if skip and reason is not None:
            return SkippedExperiment(label, reason)
        raise


def _unsupported_reason(error: ValidationError) -> str | None:
    """The messages of an error made only of unsupported values; None if it has others."""
    errors = error.errors()
    if not all(err["type"] == UNSUPPORTED_VALUE for err in errors):
        return None
    return "; ".join(err["msg"] for err in errors)


def _describe(label: dict[str, Any]) -> str:
    if not label:
        return "(base)"
    return printable("(" + ", ".join(f"{k}={v}" for k, v in label.items()) + ")", 200)


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set a dotted key, copying each nested dict on the way (copy on write): the grid's
    points share one base instead of deep-copying it per point."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        child = dict(child) if isinstance(child, dict) else {}
        node[part] = child
        node = child
    node[path[-1]] = value


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
