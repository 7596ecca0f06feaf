"""`lem`, one module per command group (vLLM's entrypoints/cli/ is the model): options.py
holds the application and the options its commands share, running.py how a run is shown,
main.py the entry point."""

from llenergymeasure.cli.main import cli, main
from llenergymeasure.cli.options import app

__all__ = ["app", "cli", "main"]
