"""Host CPU energy per socket from a fake /sys/class/powercap tree (and from this host's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure.measure.rapl import POWERCAP, POWERCAP_ENV, RaplReader

MAX_RANGE_UJ = 262_143_328_850


def zone(
    parent: Path,
    name: str,
    energy_uj: int | str,
    label: str | None = None,
    max_uj: int | str = MAX_RANGE_UJ,
) -> Path:
    path = parent / name
    path.mkdir(parents=True)
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    if label is not None:
        (path / "name").write_text(f"{label}\n")
    return path


def set_energy(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


def two_socket_tree(root: Path) -> dict[str, Path]:
    """As sysfs lays it out on a two-socket server: packages with core and dram nested."""
    pkg0 = zone(root, "intel-rapl:0", 1_000_000, "package-0")
    pkg1 = zone(root, "intel-rapl:1", 5_000_000, "package-1")
    return {
        "pkg0": pkg0,
        "pkg1": pkg1,
        "core0": zone(pkg0, "intel-rapl:0:0", 400_000, "core"),
        "dram0": zone(pkg0, "intel-rapl:0:2", 700_000, "dram"),
        "dram1": zone(pkg1, "intel-rapl:1:0", 900_000, "dram"),
        "psys": zone(root, "intel-rapl:2", 0, "psys"),  # the platform: contains the packages
        "mmio": zone(root, "intel-rapl-mmio:0", 0, "package-0"),
    }


@pytest.mark.parametrize("missing", ["absent", "empty"])
def test_no_powercap_tree_is_not_readable_and_says_why(tmp_path: Path, missing: str) -> None:
    root = tmp_path / "absent" if missing == "absent" else tmp_path
    reader = RaplReader(root=root)
    assert not reader.available
    record = reader.not_readable()
    assert (record.readable, record.sockets) == (False, [])
    assert record.reason is not None and record.reason.startswith("not readable:")
    assert str(root) in record.reason


def test_package_and_dram_per_socket_never_core_psys_or_mmio(tmp_path: Path) -> None:
    z = two_socket_tree(tmp_path)
    reader = RaplReader(root=tmp_path)
    assert [(r.socket, r.domain) for r in reader.zones] == [
        (0, "package"),
        (0, "dram"),
        (1, "package"),
        (1, "dram"),
    ]
    reader.start()
    set_energy(z["pkg0"], 3_500_000)  # +2.5 J
    set_energy(z["pkg1"], 5_250_000)  # +0.25 J
    set_energy(z["dram0"], 1_700_000)  # +1 J
    set_energy(z["dram1"], 1_400_000)  # +0.5 J
    for other in ("core0", "psys", "mmio"):  # parts or supersets: never added
        set_energy(z[other], 99_000_000)
    record = reader.stop()
    assert record.readable and record.reason is None
    assert [s.model_dump() for s in record.sockets] == [
        {"socket": 0, "package_j": pytest.approx(2.5), "dram_j": pytest.approx(1.0)},
        {"socket": 1, "package_j": pytest.approx(0.25), "dram_j": pytest.approx(0.5)},
    ]


def test_wrap_around_at_max_energy_range(tmp_path: Path) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", MAX_RANGE_UJ - 300_000, "package-0")
    reader = RaplReader(root=tmp_path)
    reader.start()
    set_energy(pkg, 500_000)  # wrapped: 300_000 to the top, 500_000 after
    assert reader.stop().sockets[0].package_j == pytest.approx(0.8, rel=1e-12)


def test_unreadable_zones_are_left_out_with_the_reason(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "not-a-number", "package-0")
    good = zone(tmp_path, "intel-rapl:1", 10)  # no name file (older kernels): socket 1
    no_max = tmp_path / "intel-rapl:2"
    no_max.mkdir()
    (no_max / "energy_uj").write_text("5\n")
    reader = RaplReader(root=tmp_path)
    assert [(r.path, r.socket) for r in reader.zones] == [(good, 1)]
    assert len(reader.unreadable) == 2
    assert "ValueError" in reader.unreadable[0]
    reader.start()
    set_energy(good, 1_000_010)
    (socket,) = reader.stop().sockets
    assert socket.model_dump() == {"socket": 1, "package_j": pytest.approx(1.0), "dram_j": None}


def test_powercap_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_socket_tree(tmp_path / "tree")
    monkeypatch.setenv(POWERCAP_ENV, str(tmp_path / "tree"))
    assert len(RaplReader().zones) == 4
    monkeypatch.delenv(POWERCAP_ENV)
    assert RaplReader().root == POWERCAP


def test_this_host_reads_rapl_or_says_why_not() -> None:
    """Whatever this machine exposes: per-socket figures, or a reason naming the path."""
    reader = RaplReader(root=POWERCAP)
    if reader.available:
        reader.start()
        record = reader.stop()
        assert record.readable
        assert all(s.package_j is not None and s.package_j >= 0 for s in record.sockets)
    else:
        record = reader.not_readable()
        assert not record.readable
        assert record.reason is not None and "powercap" in record.reason
