"""Pre-flight warnings, GPU facts and CUDA_VISIBLE_DEVICES, against a small fake pynvml."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from llenergymeasure.measure.environment import driver_versions, gpu_info, preflight_warnings
from llenergymeasure.measure.nvml import NvmlGpu, cuda_device_uuids, visible_gpu_uuids
from llenergymeasure.results.schema import GpuInfo

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
UUID_C = "GPU-cccccccc-1111-2222-3333-444444444444"
UUID_AB = "GPU-abcdef00-1111-2222-3333-444444444444"


class FakeNvml:
    """The few pynvml calls the code makes. GPUs are given in NVML index order; each has a PCI
    bus id. Fields listed in `fail` raise NVMLError; `gpus` maps uuid -> fields."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: dict[str, dict[str, Any]], fail: frozenset[str] = frozenset()):
        self.gpus = gpus
        self.order = list(gpus)
        self.fail = fail

    def _check(self, name: str) -> None:
        if name in self.fail:
            raise self.NVMLError(f"{name}: not supported")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.order)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return self.order[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.gpus:
            raise self.NVMLError("not found")
        return uuid

    def nvmlDeviceGetUUID(self, handle: str) -> bytes:
        return handle.encode()  # older pynvml returns bytes

    def nvmlDeviceGetPciInfo(self, handle: str) -> SimpleNamespace:
        self._check("pci")
        return SimpleNamespace(busId=self.gpus[handle]["bus"].encode())

    def nvmlDeviceGetIndex(self, handle: str) -> int:
        return self.order.index(handle)

    def nvmlDeviceGetName(self, handle: str) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        self._check("memory")
        return SimpleNamespace(total=80 * 2**30, used=2**30)

    def nvmlDeviceGetPowerManagementLimit(self, handle: str) -> int:
        self._check("limit")
        return int(self.gpus[handle].get("limit_mw", 700_000))

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: str) -> int:
        self._check("default_limit")
        return 700_000

    def nvmlDeviceGetPersistenceMode(self, handle: str) -> int:
        return int(self.gpus[handle].get("persistence", 1))

    def nvmlDeviceGetMigMode(self, handle: str) -> tuple[int, int]:
        self._check("mig")
        mig = int(self.gpus[handle].get("mig", 0))
        return (mig, mig)

    def nvmlDeviceGetEccMode(self, handle: str) -> tuple[int, int]:
        return (1, 1)

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        return 1980 if clock == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetMaxClockInfo(self, handle: str, clock: int) -> int:
        return 1980

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        return 35

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[object]:
        return [object()] * int(self.gpus[handle].get("procs", 0))

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        self._check("energy")
        return 123_456

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"580.65.06"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000


def three_gpus(**extra: Any) -> FakeNvml:
    # NVML index order differs from PCI order on purpose: B (0x41), A (0x19), C (0x9A)
    return FakeNvml(
        {
            UUID_B: {"bus": "00000000:41:00.0"},
            UUID_A: {"bus": "00000000:19:00.0"},
            UUID_C: {"bus": "00000000:9A:00.0"},
        },
        **extra,
    )


# ---------------------------------------------------------------------- visible_gpu_uuids


def test_no_cuda_visible_devices_means_all_gpus_in_pci_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpu_uuids(three_gpus()) == [UUID_A, UUID_B, UUID_C]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", [UUID_A]),  # indices count in PCI bus order
        ("1", [UUID_B]),
        ("2,0", [UUID_C, UUID_A]),  # CUDA's order is the list's order
        (" 1 , 0 ", [UUID_B, UUID_A]),
        ("0,5,1", [UUID_A]),  # an invalid entry ends the list
        ("3", []),
        ("-1", []),
        ("", []),  # set but empty: no GPU
        ("1,,0", [UUID_B]),
        (UUID_C, [UUID_C]),  # full UUID
        ("GPU-bbbb", [UUID_B]),  # unique UUID prefix
        ("cccc", [UUID_C]),  # prefix without the GPU- part
        (f"{UUID_B},0", [UUID_B, UUID_A]),  # UUIDs and indices mixed
        ("GPU-", []),  # ambiguous prefix: invalid
        ("GPU-ffff", []),  # no such GPU
        ("MIG-aaaaaaaa-1111", []),  # MIG instances are not GPUs here
        ("1,GPU-ffff,0", [UUID_B]),
    ],
)
def test_cuda_visible_devices_is_honoured(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert visible_gpu_uuids(three_gpus()) == expected


@pytest.mark.parametrize(
    ("visible", "devices", "expected"),
    [
        ("2,0", [0], [UUID_C]),  # a backend's device 0 is the first visible GPU
        ("2,0", [1, 0], [UUID_A, UUID_C]),
        ("2,0", None, [UUID_C, UUID_A]),  # the engine cannot say: every visible GPU
        ("2,0", [2], [UUID_C, UUID_A]),  # past the visible ones: every visible GPU
        (None, [1], [UUID_B]),
    ],
)
def test_cuda_device_numbers_map_to_visible_gpus(
    monkeypatch: pytest.MonkeyPatch,
    visible: str | None,
    devices: list[int] | None,
    expected: list[str],
) -> None:
    """Backends report CUDA device numbers; measurement alone turns them into NVML UUIDs."""
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert cuda_device_uuids(three_gpus(), devices) == expected


def test_ambiguous_uuid_prefix_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml({UUID_A: {"bus": "0:1"}, UUID_AB: {"bus": "0:2"}})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a")
    assert visible_gpu_uuids(nvml) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-ab")
    assert visible_gpu_uuids(nvml) == [UUID_AB]


# ------------------------------------------------------------------------- GPU facts, NVML


def test_gpu_info_reads_facts_and_tolerates_unsupported_fields() -> None:
    nvml = three_gpus()
    nvml.gpus[UUID_A] |= {"limit_mw": 500_000, "persistence": 0, "procs": 2}
    info = gpu_info(nvml, UUID_A)
    assert info.uuid == UUID_A
    assert info.index == 1  # NVML's own index
    assert info.pci_bus_id == "00000000:19:00.0"
    assert info.memory_total_mb == 80 * 1024
    assert (info.power_limit_w, info.default_power_limit_w) == (500.0, 700.0)
    assert (info.persistence_mode, info.mig_enabled, info.ecc_enabled) == (False, False, True)
    assert (info.sm_clock_mhz, info.memory_clock_mhz, info.max_sm_clock_mhz) == (1980, 2619, 1980)
    assert info.compute_processes == 2

    partial = gpu_info(three_gpus(fail=frozenset({"pci", "memory", "limit", "mig"})), UUID_A)
    assert partial.pci_bus_id is None
    assert partial.memory_total_mb is None
    assert partial.power_limit_w is None
    assert partial.mig_enabled is None
    assert partial.default_power_limit_w == 700.0


def test_driver_versions() -> None:
    assert driver_versions(three_gpus()) == ("580.65.06", "13.0")


def test_nvml_gpu_energy_unsupported_is_none_and_remembered() -> None:
    nvml = three_gpus(fail=frozenset({"energy"}))
    gpu = NvmlGpu(nvml, UUID_A)
    assert gpu.energy_mj() is None
    nvml.fail = frozenset()
    assert gpu.energy_mj() is None  # not asked again (each call costs ~4 ms)
    assert NvmlGpu(nvml, UUID_A).energy_mj() == 123_456


# ---------------------------------------------------------------------- preflight_warnings


def info(**overrides: Any) -> GpuInfo:
    data: dict[str, Any] = {
        "index": 0,
        "uuid": UUID_A,
        "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": "00000000:19:00.0",
        "memory_total_mb": 81559.0,
        "power_limit_w": 700.0,
        "default_power_limit_w": 700.0,
        "persistence_mode": True,
        "mig_enabled": False,
        "ecc_enabled": True,
        "sm_clock_mhz": 345,
        "memory_clock_mhz": 2619,
        "max_sm_clock_mhz": 1980,
        "temperature_c": 33,
        "compute_processes": 0,
    }
    return GpuInfo.model_validate(data | overrides)


def test_a_well_set_up_gpu_gives_no_warning() -> None:
    assert preflight_warnings([info()]) == []
    assert preflight_warnings([]) == []


def test_unknown_state_gives_no_warning() -> None:
    unknown = info(
        persistence_mode=None, power_limit_w=None, default_power_limit_w=None, mig_enabled=None
    )
    assert preflight_warnings([unknown]) == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"persistence_mode": False}, "persistence mode is off"),
        ({"power_limit_w": 450.0}, "power limit 450 W is below the default 700 W"),
        ({"compute_processes": 3}, "3 other process(es) are using the GPU"),
        ({"mig_enabled": True}, "MIG is enabled"),
    ],
)
def test_each_biasing_state_is_warned(overrides: dict[str, Any], words: str) -> None:
    (line,) = preflight_warnings([info(**overrides)])
    assert line.startswith("GPU 0 (NVIDIA H100 80GB HBM3): ")
    assert words in line


def test_power_limit_rounding_noise_is_not_a_lower_limit() -> None:
    assert preflight_warnings([info(power_limit_w=699.8)]) == []


def test_warnings_for_several_gpus_and_states() -> None:
    gpus = [info(), info(index=1, persistence_mode=False, mig_enabled=True, compute_processes=1)]
    lines = preflight_warnings(gpus)
    assert len(lines) == 3
    assert all(line.startswith("GPU 1 ") for line in lines)
