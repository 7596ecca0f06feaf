"""NVML access, behind a small reader interface that tests replace with scripted readings.

Only this module imports pynvml. Costs measured on an H100 (driver 580): the total-energy
counter ~3.9 ms per call, power and field values ~3 µs. So the counter is read at window edges
only and the sampler reads the cheap fields.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from llenergymeasure.errors import MeasurementError

# Throttle ("clocks event") reason bits, as defined by NVML.
THROTTLE_SW_POWER_CAP = 0x4
THROTTLE_HW_SLOWDOWN = 0x8
THROTTLE_SW_THERMAL = 0x20
THROTTLE_HW_THERMAL = 0x40
THROTTLE_HW_POWER_BRAKE = 0x80
THERMAL_BITS = THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL
POWER_BITS = THROTTLE_SW_POWER_CAP | THROTTLE_HW_POWER_BRAKE
SLOWDOWN_BITS = THROTTLE_HW_SLOWDOWN | THERMAL_BITS | POWER_BITS


@dataclass(frozen=True)
class GpuSample:
    """One sampler reading of one GPU. None where the GPU does not report the field."""

    power_avg_w: float | None
    power_instant_w: float | None
    temperature_c: float | None
    gpu_util_pct: float | None
    mem_util_pct: float | None
    memory_used_mb: float | None
    sm_clock_mhz: float | None
    throttle_reasons: int | None


class GpuReader(Protocol):
    """Readings of one GPU. NvmlGpu reads the hardware; tests inject scripted traces."""

    uuid: str

    def energy_mj(self) -> int | None:
        """Total-energy counter in millijoules since driver load; None if unsupported."""
        ...

    def power_instant_w(self) -> float | None:
        """Instantaneous board power, W (cheap: safe to call often)."""
        ...

    def sample(self) -> GpuSample:
        """Everything the sampler records, in one go."""
        ...

    def compute_pids(self) -> set[int] | None:
        """Processes with a compute context on the GPU now; None if unreadable."""
        ...


def _pynvml() -> Any:
    try:
        import pynvml
    except ImportError as e:  # pragma: no cover - a base dependency
        raise MeasurementError("nvidia-ml-py is not installed") from e
    return pynvml


@contextlib.contextmanager
def nvml_session() -> Iterator[Any]:
    """nvmlInit/nvmlShutdown around a block; MeasurementError when NVML is unusable."""
    pynvml = _pynvml()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise MeasurementError(f"NVML is not available: {e}") from e
    try:
        yield pynvml
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def nvml_available() -> bool:
    """True when NVML initialises and sees at least one GPU."""
    try:
        with nvml_session() as pynvml:
            return int(pynvml.nvmlDeviceGetCount()) > 0
    except MeasurementError:
        return False


class NvmlGpu:
    """One GPU, addressed by UUID (never by index: CUDA and NVML may order GPUs differently)."""

    def __init__(self, pynvml: Any, uuid: str) -> None:
        self.nvml = pynvml
        self.uuid = uuid
        try:
            self.handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        except pynvml.NVMLError as e:
            raise MeasurementError(f"NVML has no GPU with UUID {uuid}: {e}") from e
        self._energy_supported = True

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, name)(self.handle, *args)
        except self.nvml.NVMLError:
            return None

    def energy_mj(self) -> int | None:
        if not self._energy_supported:
            return None
        value = self._call("nvmlDeviceGetTotalEnergyConsumption")
        if value is None:
            self._energy_supported = False
            return None
        return int(value)

    def _field_powers_w(self) -> tuple[float | None, float | None]:
        """(average, instant) power from the field-value API (Hopper/Ampere and newer)."""
        fields = [self.nvml.NVML_FI_DEV_POWER_AVERAGE, self.nvml.NVML_FI_DEV_POWER_INSTANT]
        values = self._call("nvmlDeviceGetFieldValues", fields)
        if values is None:
            return None, None
        out: list[float | None] = []
        for v in values:
            ok = getattr(v, "nvmlReturn", 1) == 0
            out.append(float(v.value.uiVal) / 1000.0 if ok else None)
        return out[0], out[1]

    def power_instant_w(self) -> float | None:
        _, instant = self._field_powers_w()
        return instant

    def compute_pids(self) -> set[int] | None:
        procs = self._call("nvmlDeviceGetComputeRunningProcesses")
        return None if procs is None else {int(p.pid) for p in procs}

    def sample(self) -> GpuSample:
        avg, instant = self._field_powers_w()
        if avg is None:
            usage = self._call("nvmlDeviceGetPowerUsage")
            avg = usage / 1000.0 if usage is not None else None
        util = self._call("nvmlDeviceGetUtilizationRates")
        mem = self._call("nvmlDeviceGetMemoryInfo")
        temp = self._call("nvmlDeviceGetTemperature", self.nvml.NVML_TEMPERATURE_GPU)
        clock = self._call("nvmlDeviceGetClockInfo", self.nvml.NVML_CLOCK_SM)
        reasons = self._call("nvmlDeviceGetCurrentClocksEventReasons")
        if reasons is None:
            reasons = self._call("nvmlDeviceGetCurrentClocksThrottleReasons")
        return GpuSample(
            power_avg_w=avg,
            power_instant_w=instant,
            temperature_c=float(temp) if temp is not None else None,
            gpu_util_pct=float(util.gpu) if util is not None else None,
            mem_util_pct=float(util.memory) if util is not None else None,
            memory_used_mb=mem.used / 2**20 if mem is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
            throttle_reasons=int(reasons) if reasons is not None else None,
        )


def visible_gpu_uuids(pynvml: Any) -> list[str]:
    """UUIDs of the GPUs this process may use, honouring CUDA_VISIBLE_DEVICES (UUIDs, unique UUID
    prefixes, or indices). Indices are read in PCI bus order, which is CUDA's order only under
    CUDA_DEVICE_ORDER=PCI_BUS_ID: the worker sets that before any CUDA call."""
    count = int(pynvml.nvmlDeviceGetCount())
    all_uuids = [
        _text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)
    ]
    by_pci = sorted(
        all_uuids,
        key=lambda u: _text(pynvml.nvmlDeviceGetPciInfo(pynvml.nvmlDeviceGetHandleByUUID(u)).busId),
    )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return by_pci
    chosen: list[str] = []
    for token in (t.strip() for t in visible.split(",")):
        if not token:
            break
        if token.isdigit():
            if int(token) >= len(by_pci):
                break  # CUDA stops at the first invalid entry
            chosen.append(by_pci[int(token)])
        else:
            prefix = token if "-" in token else f"GPU-{token}"
            matches = [u for u in all_uuids if u.startswith(prefix)]
            if len(matches) != 1:
                break
            chosen.append(matches[0])
    return chosen


def cuda_device_uuids(pynvml: Any, devices: list[int] | None) -> list[str]:
    """UUIDs of the GPUs a backend reports by CUDA device number (its process's numbering:
    0 is the first visible device). None, or a number past the visible devices (the engine
    could not say, or it sees other devices than NVML): every visible GPU."""
    visible = visible_gpu_uuids(pynvml)
    if devices is None or any(not 0 <= d < len(visible) for d in devices):
        return visible
    return [visible[d] for d in devices]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
