"""CPU package energy from a fake /sys/class/powercap tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure.measure.rapl import RaplReader

MAX_RANGE_UJ = 262_143_328_850


def zone(root: Path, name: str, energy_uj: int | str, max_uj: int | str = MAX_RANGE_UJ) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_energy(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


def test_no_powercap_tree_means_unavailable(tmp_path: Path) -> None:
    assert not RaplReader(root=tmp_path / "absent").available
    assert not RaplReader(root=tmp_path).available


def test_sums_packages_and_ignores_subzones_and_mmio(tmp_path: Path) -> None:
    pkg0 = zone(tmp_path, "intel-rapl:0", 1_000_000)
    pkg1 = zone(tmp_path, "intel-rapl:1", 5_000_000)
    core = zone(tmp_path, "intel-rapl:0:0", 400_000)  # subzone (sysfs lists it at top level)
    mmio = zone(tmp_path, "intel-rapl-mmio:0", 0)
    reader = RaplReader(root=tmp_path)
    assert reader.available
    assert [z.name for z in reader.zones] == ["intel-rapl:0", "intel-rapl:1"]
    reader.start()
    set_energy(pkg0, 3_500_000)  # +2.5 J
    set_energy(pkg1, 5_250_000)  # +0.25 J
    set_energy(core, 99_000_000)  # a subzone is part of its package: never added again
    set_energy(mmio, 42_000_000)
    assert reader.stop_j() == pytest.approx(2.75, rel=1e-12)


def test_wrap_around_at_max_energy_range(tmp_path: Path) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", MAX_RANGE_UJ - 300_000)
    reader = RaplReader(root=tmp_path)
    reader.start()
    set_energy(pkg, 500_000)  # wrapped: 300_000 to the top, 500_000 after
    assert reader.stop_j() == pytest.approx(0.8, rel=1e-12)


def test_unreadable_zones_are_skipped(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "not-a-number")
    good = zone(tmp_path, "intel-rapl:1", 10)
    no_max = tmp_path / "intel-rapl:2"
    no_max.mkdir()
    (no_max / "energy_uj").write_text("5\n")
    reader = RaplReader(root=tmp_path)
    assert reader.zones == [good]
    reader.start()
    set_energy(good, 1_000_010)
    assert reader.stop_j() == pytest.approx(1.0, rel=1e-12)
