"""Which values of the shared parameters a backend supports (its descriptor's `capabilities`):
what config validation, grid expansion (and `skip_invalid`) and `lem config list` all read.

Only parameters whose valid values depend on the backend live here. Settings that exist for one
backend only are typed in that backend's section (config/backends.py) instead.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

Precision = Literal["fp32", "fp16", "bf16"]
Quantization = Literal[
    "bnb_4bit", "bnb_8bit", "fp8", "awq", "gptq", "int8_weight_only", "int4_weight_only"
]

UNSUPPORTED_VALUE = "unsupported_value"
"""pydantic error type of a value the chosen backend does not support (see `skip_invalid`)."""


@dataclass(frozen=True)
class Capabilities:
    """Values of the shared parameters one backend accepts (None: no quantisation)."""

    precision: tuple[Precision, ...]
    quantization: tuple[Quantization | None, ...]


LIMITED_PARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(Capabilities))
"""Parameters whose valid values depend on the backend."""


def supported_values(backend: str, parameter: str) -> tuple[object, ...] | None:
    """The values `backend` accepts for `parameter`; None if the table does not limit it."""
    from llenergymeasure.config.descriptor import descriptors

    found = descriptors().get(backend)
    if found is None or parameter not in LIMITED_PARAMETERS:
        return None
    caps = found.capabilities
    values: tuple[object, ...] = getattr(caps, parameter)
    return values


def describe_values(values: tuple[object, ...]) -> str:
    """('fp16', None) -> 'fp16, null' for messages."""
    return ", ".join("null" if v is None else str(v) for v in values)


def unsupported_message(backend: str, parameter: str, value: object) -> str | None:
    """Why `backend` cannot run `parameter: value`, naming what it can run; None if it can."""
    values = supported_values(backend, parameter)
    if values is None or value in values:
        return None
    shown = "null" if value is None else repr(value)
    return (
        f"backend '{backend}' does not support {parameter} {shown}; "
        f"it supports: {describe_values(values)}"
    )
