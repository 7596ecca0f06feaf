"""Where an experiment ran, recorded with its result so numbers can be compared honestly,
and the pre-flight checks that warn when the GPU's state would bias a measurement."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import socket
from pathlib import Path
from typing import Any

from llenergymeasure.config.descriptor import descriptors
from llenergymeasure.measure.nvml import _text
from llenergymeasure.results.schema import Environment, GpuInfo

MEASUREMENT_LIBRARIES = ("nvidia-ml-py",)


def in_container() -> bool:
    """Docker/Podman leave marker files; cgroup v1 names the runtime."""
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        cgroup = Path("/proc/1/cgroup").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(word in cgroup for word in ("docker", "containerd", "kubepods", "libpod"))


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or None


def cpu_governor() -> str | None:
    path = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    with contextlib.suppress(OSError):
        return path.read_text(encoding="utf-8").strip()
    return None


def library_versions() -> dict[str, str]:
    """Versions of every registered backend's engine distributions installed here, and of
    the measurement libraries."""
    names = [d for found in descriptors().values() for d in found.distributions]
    versions = {}
    for name in (*names, *MEASUREMENT_LIBRARIES):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def gpu_info(pynvml: Any, uuid: str) -> GpuInfo:
    """Static facts and start-of-experiment state of one GPU; unreadable fields are None."""
    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)

    def get(name: str, *args: Any) -> Any:
        try:
            return getattr(pynvml, name)(handle, *args)
        except pynvml.NVMLError:
            return None

    mem = get("nvmlDeviceGetMemoryInfo")
    limit = get("nvmlDeviceGetPowerManagementLimit")
    default = get("nvmlDeviceGetPowerManagementDefaultLimit")
    persistence = get("nvmlDeviceGetPersistenceMode")
    mig = get("nvmlDeviceGetMigMode")
    ecc = get("nvmlDeviceGetEccMode")
    pci = get("nvmlDeviceGetPciInfo")
    return GpuInfo(
        index=get("nvmlDeviceGetIndex"),
        uuid=uuid,
        name=_text(get("nvmlDeviceGetName") or "unknown"),
        pci_bus_id=_text(pci.busId) if pci is not None else None,
        memory_total_mb=mem.total / 2**20 if mem is not None else None,
        power_limit_w=limit / 1000.0 if limit is not None else None,
        default_power_limit_w=default / 1000.0 if default is not None else None,
        persistence_mode=bool(persistence) if persistence is not None else None,
        mig_enabled=bool(mig[0]) if mig is not None else None,
        ecc_enabled=bool(ecc[0]) if ecc is not None else None,
        sm_clock_mhz=get("nvmlDeviceGetClockInfo", pynvml.NVML_CLOCK_SM),
        memory_clock_mhz=get("nvmlDeviceGetClockInfo", pynvml.NVML_CLOCK_MEM),
        max_sm_clock_mhz=get("nvmlDeviceGetMaxClockInfo", pynvml.NVML_CLOCK_SM),
        temperature_c=get("nvmlDeviceGetTemperature", pynvml.NVML_TEMPERATURE_GPU),
        compute_processes=len(get("nvmlDeviceGetComputeRunningProcesses") or []),
    )


def driver_versions(pynvml: Any) -> tuple[str | None, str | None]:
    """(driver version, CUDA version the driver supports)."""
    driver = cuda = None
    with contextlib.suppress(pynvml.NVMLError):
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
    with contextlib.suppress(pynvml.NVMLError):
        v = int(pynvml.nvmlSystemGetCudaDriverVersion())
        cuda = f"{v // 1000}.{(v % 1000) // 10}"
    return driver, cuda


def preflight_warnings(gpus: list[GpuInfo]) -> list[str]:
    """State that biases energy numbers. Called before this process creates a CUDA context,
    so any compute process on the GPU belongs to someone else."""
    notes = []
    for gpu in gpus:
        tag = f"GPU {gpu.index} ({gpu.name})"
        if gpu.persistence_mode is False:
            notes.append(
                f"{tag}: persistence mode is off; the driver may unload between runs and idle "
                "power and start-up differ (the tool does not change it: `nvidia-smi -pm 1`)"
            )
        if (
            gpu.power_limit_w is not None
            and gpu.default_power_limit_w is not None
            and gpu.power_limit_w < gpu.default_power_limit_w - 0.5
        ):
            notes.append(
                f"{tag}: power limit {gpu.power_limit_w:.0f} W is below the default "
                f"{gpu.default_power_limit_w:.0f} W; results are not comparable with default cards"
            )
        if gpu.compute_processes:
            notes.append(
                f"{tag}: {gpu.compute_processes} other process(es) are using the GPU; their "
                "energy is counted too"
            )
        if gpu.mig_enabled:
            notes.append(
                f"{tag}: MIG is enabled; NVML reports power for the whole GPU, so energy "
                "includes every partition"
            )
    return notes


def snapshot(
    device: str,
    backend_libraries: dict[str, str],
    gpus: list[GpuInfo] | None = None,
    driver: tuple[str | None, str | None] = (None, None),
) -> Environment:
    return Environment(
        hostname_sha256=hashlib.sha256(socket.gethostname().encode()).hexdigest()[:16],
        python_version=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        cpu_model=cpu_model(),
        cpu_governor=cpu_governor(),
        device=device,
        in_container=in_container(),
        gpus=gpus or [],
        gpu_count=len(gpus or []),
        driver_version=driver[0],
        cuda_driver_version=driver[1],
        library_versions=library_versions() | backend_libraries,
    )
