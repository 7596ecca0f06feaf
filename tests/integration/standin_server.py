"""The server of toy_backend.STANDIN (a module of its own: the descriptor is read while the
config package loads, the Server class only by the worker)."""

from __future__ import annotations

import sys
from pathlib import Path

from llenergymeasure.backends.base import Server, cli_flags
from llenergymeasure.config.experiment import ExperimentConfig


class StandInServer(Server):
    """Its "server" is the stand-in (tests/unit/serving_standin.py, no model): passthrough_kwargs
    become its flags, so a campaign file picks its misbehaviour (test_serving_faults.py)."""

    def command(self, config: ExperimentConfig, model_path: str, port: int) -> list[str]:
        standin = Path(__file__).resolve().parents[1] / "unit" / "serving_standin.py"
        flags = cli_flags(config.passthrough_kwargs)
        return [sys.executable, str(standin), "--port", str(port), *flags]
