"""Grid expansion: a campaign file -> the validated list of experiments it describes.

Rules (they decide what gets measured, so none of them fails silently):
- a universal key (`batch_size`, `decoding.temperature`) is a dimension of every backend's grid;
- `backend: [...]` picks the backends; each backend gets its own Cartesian product;
- `<backend>.<key>` (e.g. `pytorch.batch_size`) is a dimension of that backend's grid only, and
  naming a backend the campaign does not run is an error;
- explicit `experiments:` are merged over `base` and added after the grid;
- two entries with the same effective config are one experiment (reported, not dropped quietly).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from llenergymeasure.config.campaign import CampaignConfig
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.loader import (
    Locator,
    PathPart,
    YamlDocument,
    explain_validation_error,
    read_yaml,
)
from llenergymeasure.errors import ConfigError
from llenergymeasure.flatten import flatten

KNOWN_BACKENDS: tuple[str, ...] = get_args(ExperimentConfig.model_fields["backend"].annotation)


@dataclass(frozen=True)
class PlannedExperiment:
    """One expanded experiment: its validated config, stable id and what makes it distinct."""

    config: ExperimentConfig
    experiment_id: str
    label: dict[str, Any]


@dataclass(frozen=True)
class Campaign:
    """A loaded campaign file: validated top level, expanded experiments, notices for the user."""

    config: CampaignConfig
    experiments: list[PlannedExperiment]
    source: Path | None
    """The file it was read from; None when given as data (the library API)."""
    base_dir: Path
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Dimension:
    key: str
    path: tuple[str, ...]
    values: list[Any]


def load_campaign(path: Path, overrides: Mapping[str, Any] | None = None) -> Campaign:
    """Read, validate and expand a campaign file; any problem is a ConfigError. overrides
    replace top-level keys of the file (CLI flags, library arguments)."""
    doc = read_yaml(path, what="campaign file")
    return _campaign(doc, overrides, source=path, base_dir=path.resolve().parent)


def campaign_from_data(
    data: Mapping[str, Any], base_dir: Path, overrides: Mapping[str, Any] | None = None
) -> Campaign:
    """A campaign given as data (the library API), checked exactly like a file."""
    doc = YamlDocument(path=Path("<campaign argument>"), data=dict(data), node=None)
    return _campaign(doc, overrides, source=None, base_dir=base_dir)


def _campaign(
    doc: YamlDocument, overrides: Mapping[str, Any] | None, source: Path | None, base_dir: Path
) -> Campaign:
    if overrides:
        check_overrides(overrides)
        doc = dataclasses.replace(doc, data={**doc.data, **overrides})
    try:
        config = CampaignConfig.model_validate(doc.data)
    except ValidationError as e:
        raise explain_validation_error(e, CampaignConfig, doc) from e
    experiments, notices = expand(config, doc)
    return Campaign(config, experiments, source=source, base_dir=base_dir, notices=notices)


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
    experiments, notices = expand(config, doc, base_prefix=())
    return Campaign(config, experiments, source=source, base_dir=base_dir, notices=notices)


def expand(
    config: CampaignConfig, doc: YamlDocument, base_prefix: tuple[PathPart, ...] = ("base",)
) -> tuple[list[PlannedExperiment], list[str]]:
    """All experiments of a campaign, in a stable order, validated, with duplicates merged.

    base_prefix is where the base settings sit in the file (`base:` in a campaign file, the top
    level in an experiment file), so error messages point at the right key."""
    planned: list[PlannedExperiment] = []
    if config.grid is not None:
        planned.extend(_expand_grid(config, doc, base_prefix))
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
    return list(unique.values()), notices


def _expand_grid(
    config: CampaignConfig, doc: YamlDocument, base_prefix: tuple[PathPart, ...]
) -> list[PlannedExperiment]:
    assert config.grid is not None
    grid = config.grid
    base_backend = config.base.get("backend", "pytorch")
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

    planned: list[PlannedExperiment] = []
    for backend in backends:
        dims = universal + scoped[backend]
        for combo in itertools.product(*(d.values for d in dims)):
            data = _for_backend(config.base, backend, backends)
            label: dict[str, Any] = {"backend": backend} if "backend" in grid else {}
            own: dict[tuple[str, ...], tuple[PathPart, ...]] = {}
            for dim, value in zip(dims, combo, strict=True):
                _set_path(data, dim.path, value)
                label[dim.key] = value
                own[dim.path] = ("grid", dim.key, _index_of(dim.values, value))
            planned.append(_validate(data, label, doc, _locator(own, base_prefix)))
    return planned


def _index_of(values: list[Any], value: Any) -> int:
    return next(i for i, v in enumerate(values) if v is value)


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
    section_model = ExperimentConfig.model_fields[backend].annotation
    section_fields: dict[str, Any] = next(
        (a.model_fields for a in get_args(section_model) if hasattr(a, "model_fields")), {}
    )
    if parts[0] in section_fields:
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


def _validate(
    data: dict[str, Any], label: dict[str, Any], doc: YamlDocument, locate: Locator
) -> PlannedExperiment:
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        context = f"in experiment {_describe(label)}" if label else ""
        raise explain_validation_error(e, ExperimentConfig, doc, locate, context) from e
    return PlannedExperiment(config=config, experiment_id=config.experiment_id(), label=label)


def _describe(label: dict[str, Any]) -> str:
    if not label:
        return "(base)"
    return "(" + ", ".join(f"{k}={v}" for k, v in label.items()) + ")"


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
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
