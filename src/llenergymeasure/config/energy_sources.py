"""Which energy sources `measurement.energy_source` may name, and whether one can be used in
this Python environment: checkable by the host (pre-flight) and the worker alike, importing
nothing of the source itself (measure/sources.py reads them, in the worker)."""

from __future__ import annotations

import importlib.util

NVML = "nvml"
EXTRAS = {"zeus": "zeus", "codecarbon": "codecarbon"}
"""energy_source -> the module it imports, which is also the name of the pip extra."""


def missing_extra(source: str) -> str | None:
    """Why `source` cannot be used in this Python environment, or None. Checks the module is
    installed without importing it (no engine, no NVML initialised)."""
    module = EXTRAS.get(source)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return (
        f"measurement.energy_source: {source} needs the optional extra '{module}', which is "
        f"not installed here: pip install 'llenergymeasure[{module}]'"
    )
