"""Other GPU energy sources, read over exactly the measured window (measurement.energy_source).

NVML's counter, read by the session itself, is the default. Zeus and CodeCarbon are optional
extras: each is started right after the window's start edge and stopped right before its end
edge, and its figure becomes the window's raw energy, named with its version. The NVML counter
is still read at the edges (per_gpu), so the two can be compared on every run.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol

from llenergymeasure.config.energy_sources import missing_extra
from llenergymeasure.errors import ConfigError

J_PER_KWH = 3.6e6


class EnergySource(Protocol):
    name: str
    version: str

    def start(self) -> None: ...

    def stop_j(self) -> float | None:
        """GPU energy since start(), J, summed over the GPUs; None if it could not say."""
        ...


class ZeusSource:
    """Zeus's ZeusMonitor window; the session synchronises the device, so Zeus does not."""

    name = "zeus"

    def __init__(self, gpu_indices: Sequence[int] | None) -> None:
        zeus = _import("zeus")
        monitor_mod = importlib.import_module("zeus.monitor")
        self.version: str = str(getattr(zeus, "__version__", "unknown"))
        self._monitor: Any = monitor_mod.ZeusMonitor(
            gpu_indices=list(gpu_indices) if gpu_indices is not None else None
        )

    def start(self) -> None:
        self._monitor.begin_window("lem-window", sync_execution=False)

    def stop_j(self) -> float | None:
        measurement = self._monitor.end_window("lem-window", sync_execution=False)
        gpu = measurement.gpu_energy
        return float(sum(gpu.values())) if gpu else None


class CodeCarbonSource:
    """CodeCarbon's task API (start_task / stop_task). It reads NVML's energy counter at stop
    (and every measure_power_secs, 15 s by default, in between), so a 10 s window is one
    counter delta whatever the interval; without a counter it falls back to power x time."""

    name = "codecarbon"

    def __init__(self, gpu_indices: Sequence[int] | None) -> None:
        codecarbon = _import("codecarbon")
        self.version = str(getattr(codecarbon, "__version__", "unknown"))
        # Offline: the online tracker looks the host's country up over the network, which a GPU
        # node may not reach; the country only feeds CodeCarbon's CO2 figure, not used here.
        kwargs: dict[str, Any] = {
            "country_iso_code": "USA",
            "save_to_file": False,
            "log_level": "error",
            "tracking_mode": "machine",
            "allow_multiple_runs": True,
        }
        if gpu_indices is not None:
            kwargs["gpu_ids"] = list(gpu_indices)
        self._tracker: Any = codecarbon.OfflineEmissionsTracker(**kwargs)

    def start(self) -> None:
        self._tracker.start_task("lem-window")

    def stop_j(self) -> float | None:
        data = self._tracker.stop_task("lem-window")
        gpu_kwh = getattr(data, "gpu_energy", None)
        return float(gpu_kwh) * J_PER_KWH if gpu_kwh is not None else None


SOURCES: dict[str, type[ZeusSource] | type[CodeCarbonSource]] = {
    "zeus": ZeusSource,
    "codecarbon": CodeCarbonSource,
}


def make_source(source: str, gpu_indices: Sequence[int] | None) -> EnergySource:
    """The external source named by measurement.energy_source (not 'nvml')."""
    return SOURCES[source](gpu_indices)


def _import(module: str) -> Any:
    problem = missing_extra(module)
    if problem is not None:
        raise ConfigError(problem)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"measurement.energy_source: {module} is installed but failed to import ({e}); "
            f"reinstall with pip install 'llenergymeasure[{module}]'"
        ) from e
