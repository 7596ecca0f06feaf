"""The CLI's consoles: readable on a terminal and off one (kept light: no pandas here)."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table


class CliConsole(Console):
    """A Console that, off a terminal (a pipe, nohup, a batch job, tee), never wraps text and prints
    each table at its natural width: a log keeps every column and never breaks a parameter
    name at 80 columns. COLUMNS set by hand still wins."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if (
            self.is_terminal
            or "COLUMNS" in os.environ
            or not any(isinstance(o, (Table, Group)) for o in objects)
        ):
            super().print(*objects, **kwargs)
            return
        options = self.options.update(max_width=100_000)
        natural = max(Measurement.get(self, options, o).maximum for o in objects)
        width = self.width
        self.width = max(natural, width)
        try:
            super().print(*objects, **kwargs)
        finally:
            self.width = width


def cli_console(stderr: bool = False) -> Console:
    wrap = os.isatty(2 if stderr else 1) or "COLUMNS" in os.environ
    return CliConsole(stderr=stderr, soft_wrap=not wrap)
