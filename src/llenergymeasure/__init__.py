"""LLenergyMeasure: what LLM inference really costs in energy, measured honestly.

The library API (run_campaign, run_experiment, resume, load_results; see api.py) is imported on
first use, so that a worker importing this package does not load the orchestrator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llenergymeasure.version import __version__ as __version__

__all__ = [
    "CampaignResults",
    "ExperimentFailedError",
    "load_results",
    "resume",
    "run_campaign",
    "run_experiment",
]

if TYPE_CHECKING:
    from llenergymeasure.api import (
        CampaignResults,
        ExperimentFailedError,
        load_results,
        resume,
        run_campaign,
        run_experiment,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from llenergymeasure import api

        return getattr(api, name)
    raise AttributeError(f"module 'llenergymeasure' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The API shows in dir() and completion, though it is imported on first use; the
    module's own imports (typing helpers) do not."""
    return sorted({*__all__, "__version__", *(n for n in globals() if n.startswith("__"))})
