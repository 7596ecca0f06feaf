"""CPU package energy from Linux RAPL (/sys/class/powercap), reported apart from GPU energy.

Optional: most containers and VMs do not expose it, and reading it often needs root.
"""

from __future__ import annotations

from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


class RaplReader:
    """Sums the package domains (intel-rapl:N, not their subzones) and handles wrap-around."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self.zones = sorted(
            p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and _readable(p)
        )
        self._start: list[int] = []

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def start(self) -> None:
        self._start = [_read_int(z / "energy_uj") for z in self.zones]

    def stop_j(self) -> float:
        total_uj = 0
        for zone, before in zip(self.zones, self._start, strict=True):
            after = _read_int(zone / "energy_uj")
            if after < before:  # the counter wrapped at max_energy_range_uj
                after += _read_int(zone / "max_energy_range_uj")
            total_uj += after - before
        return total_uj / 1e6


def _readable(zone: Path) -> bool:
    try:
        _read_int(zone / "energy_uj")
        _read_int(zone / "max_energy_range_uj")
    except (OSError, ValueError):
        return False
    return True


def _read_int(path: Path) -> int:
    return int(path.read_text(encoding="utf-8").strip())
