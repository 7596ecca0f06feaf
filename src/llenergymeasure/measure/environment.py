"""Where an experiment ran, recorded with its result so numbers can be compared honestly."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
from pathlib import Path

from llenergymeasure.results.schema import Environment


def in_container() -> bool:
    """Docker/Podman leave marker files; cgroup v1 names the runtime."""
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        cgroup = Path("/proc/1/cgroup").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(word in cgroup for word in ("docker", "containerd", "kubepods", "libpod"))


def snapshot(device: str, library_versions: dict[str, str]) -> Environment:
    return Environment(
        hostname_sha256=hashlib.sha256(socket.gethostname().encode()).hexdigest()[:16],
        python_version=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        device=device,
        in_container=in_container(),
        library_versions=library_versions,
    )
