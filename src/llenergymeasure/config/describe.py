"""`lem config list`: every parameter of every backend with its type, default and description,
read from the pydantic models and the backends' descriptors (nothing is written here per
parameter, so the listing cannot drift from what validation accepts)."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llenergymeasure.config.campaign import CampaignConfig
from llenergymeasure.config.capabilities import LIMITED_PARAMETERS, supported_values
from llenergymeasure.config.descriptor import backend_names, descriptor
from llenergymeasure.config.experiment import ExperimentConfig


@dataclass(frozen=True)
class Parameter:
    """One settable key, as it is written in an experiment file or a grid."""

    key: str
    type: str
    default: str
    description: str


def parameters(backend: str) -> list[Parameter]:
    """The keys an experiment on `backend` can set: the shared ones (with the values this
    backend supports where the capability table limits them) and its own section's."""
    descriptor(backend)  # an unknown backend is a ConfigError naming the known ones
    rows: list[Parameter] = []
    for name, field in ExperimentConfig.model_fields.items():
        if name in backend_names() and name != backend:
            continue
        if name in LIMITED_PARAMETERS:
            values = supported_values(backend, name) or ()
            rows.append(_row(name, field, " | ".join(_show(v) for v in values)))
        else:
            rows.extend(_rows(name, field))
    return rows


def _rows(key: str, field: FieldInfo) -> list[Parameter]:
    model = _model_of(field.annotation)
    if model is None:
        return [_row(key, field, _type_name(field.annotation) + _bounds(field))]
    rows: list[Parameter] = []
    for name, sub in model.model_fields.items():
        rows.extend(_rows(f"{key}.{name}", sub))
    return rows


def _row(key: str, field: FieldInfo, type_name: str) -> Parameter:
    if field.is_required():
        return Parameter(key, type_name, "(required)", field.description or "")
    default = field.get_default(call_default_factory=True)
    return Parameter(key, type_name, _show(default), field.description or "")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(_show(v) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(annotation))
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    symbols = {
        annotated_types.Ge: (">=", "ge"),
        annotated_types.Gt: (">", "gt"),
        annotated_types.Le: ("<=", "le"),
        annotated_types.Lt: ("<", "lt"),
        annotated_types.MinLen: ("length >=", "min_length"),
    }
    parts = [
        f"{symbol} {getattr(m, attr)}"
        for m in field.metadata
        for kind, (symbol, attr) in symbols.items()
        if isinstance(m, kind)
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _show(value: Any) -> str:
    """A value as it is written in YAML: null, true, 1.0, sdpa, {}."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json"))
    return json.dumps(value)


def campaign_parameters() -> list[Parameter]:
    """The campaign file's own top-level keys (base/grid/experiments hold the ones above)."""
    return [p for name, f in CampaignConfig.model_fields.items() for p in _rows(name, f)]
