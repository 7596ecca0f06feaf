"""Energy-source interface. A source is opened around the measured window and reports joules.

No source is implemented yet (the NVML counter is its own piece of work): until one is,
`find_energy_source` returns None and the worker reports every energy figure as null, with a
warning, rather than a number that was not measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class EnergyReading:
    energy_j: float
    method: str
    baseline_power_w: float | None = None


class EnergySource(Protocol):
    """Measures energy between start() and stop(); both are called at synchronised edges."""

    def start(self) -> None: ...

    def stop(self) -> EnergyReading: ...


def find_energy_source(device: str) -> EnergySource | None:  # noqa: ARG001
    """The best energy source for device ('cpu', 'cuda:0 (...)'); None if there is none."""
    return None


NO_ENERGY_WARNING = (
    "no energy source available on this device: energy figures are null, not zero "
    "(GPU energy needs the NVML measurement layer and an NVIDIA GPU)"
)
