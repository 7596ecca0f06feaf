"""Host CPU energy from Linux RAPL (/sys/class/powercap): package and DRAM, per socket.

Reported beside GPU energy, never added to it. Optional: most containers and VMs do not expose
powercap, and since Linux 5.10 (CVE-2020-8694) energy_uj is readable by root only, so the
record says plainly why it is empty. LEM_POWERCAP_DIR points the reader at another tree
(tests use a fake one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llenergymeasure.results.schema import CpuSocketEnergy, HostEnergy

POWERCAP = Path("/sys/class/powercap")
POWERCAP_ENV = "LEM_POWERCAP_DIR"
PREFIX = "intel-rapl:"  # AMD's RAPL driver uses the same names


Domain = Literal["package", "dram"]


@dataclass(frozen=True)
class RaplZone:
    path: Path
    socket: int
    domain: Domain


class RaplReader:
    """Package zones (intel-rapl:N, named package-K: socket K) and their DRAM subzones (named
    dram); core, uncore and psys are parts or supersets of these, so never summed."""

    def __init__(self, root: Path | None = None) -> None:
        env = os.environ.get(POWERCAP_ENV)
        self.root = root if root is not None else Path(env) if env else POWERCAP
        self.zones, self.unreadable = _discover(self.root)
        self._start: list[int] = []

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def not_readable(self) -> HostEnergy:
        """The record where nothing could be read, with the reason."""
        reason = "; ".join(self.unreadable) or f"no RAPL package zone under {self.root}"
        return HostEnergy(readable=False, reason=f"not readable: {reason}")

    def start(self) -> None:
        self._start = [_read_int(z.path / "energy_uj") for z in self.zones]

    def stop(self) -> HostEnergy:
        """Energy per socket and domain since start(), counter wrap-around handled."""
        sockets: dict[int, dict[str, float]] = {}
        for zone, before in zip(self.zones, self._start, strict=True):
            after = _read_int(zone.path / "energy_uj")
            if after < before:  # the counter wrapped at max_energy_range_uj
                after += _read_int(zone.path / "max_energy_range_uj")
            sockets.setdefault(zone.socket, {})[zone.domain] = (after - before) / 1e6
        return HostEnergy(
            readable=True,
            sockets=[
                CpuSocketEnergy(socket=s, package_j=d.get("package"), dram_j=d.get("dram"))
                for s, d in sorted(sockets.items())
            ],
        )


def _discover(root: Path) -> tuple[list[RaplZone], list[str]]:
    """Readable zones, and why the others were left out."""
    zones: list[RaplZone] = []
    unreadable: list[str] = []
    if not root.is_dir():
        return zones, [f"{root} does not exist (no RAPL on this host or not mounted here)"]
    for top in sorted(root.glob(PREFIX + "*")):
        if top.name.count(":") != 1:
            continue
        name = _name(top)
        if name is not None and not name.startswith("package-"):
            continue  # psys (platform) and others: not a socket's package
        try:
            socket = int(name.removeprefix("package-")) if name else int(top.name.split(":")[1])
        except ValueError:
            continue
        candidates: list[tuple[Path, Domain]] = [(top, "package")]
        candidates += [(sub, "dram") for sub in _subzones(root, top) if _name(sub) == "dram"]
        for path, domain in candidates:
            problem = _unreadable(path)
            if problem is None:
                zones.append(RaplZone(path, socket, domain))
            else:
                unreadable.append(f"{path / 'energy_uj'}: {problem}")
    return zones, unreadable


def _subzones(root: Path, top: Path) -> list[Path]:
    """A package's subzones: inside its directory, as sysfs nests them (also linked at the top
    of the tree, where only those are taken that are not nested)."""
    found = {p.name: p for p in root.glob(top.name + ":*")}
    found |= {p.name: p for p in top.glob(top.name + ":*")}
    return [found[name] for name in sorted(found)]


def _name(zone: Path) -> str | None:
    try:
        return (zone / "name").read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _unreadable(zone: Path) -> str | None:
    try:
        _read_int(zone / "energy_uj")
        _read_int(zone / "max_energy_range_uj")
    except PermissionError:
        return "permission denied (root only since Linux 5.10)"
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _read_int(path: Path) -> int:
    return int(path.read_text(encoding="utf-8").strip())
