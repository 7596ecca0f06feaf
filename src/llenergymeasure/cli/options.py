"""The `lem` application, its consoles and the options its commands share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llenergymeasure.config.choices import Order, RunnerChoice
from llenergymeasure.console import cli_console
from llenergymeasure.faces import cli_flag
from llenergymeasure.version import __version__

if TYPE_CHECKING:
    pass


app = typer.Typer(
    help="LLenergyMeasure: measure the energy, throughput and latency of LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
out = cli_console()
FORCE_FLAG = cli_flag("force_unlock")
err = cli_console(stderr=True)

OutputDir = Annotated[
    Path | None, typer.Option("--output-dir", "-o", help="Results root (overrides the file).")
]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", min=0.001, help="Per-experiment limit in seconds (overrides)."),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would run; run nothing.")]
Retries = Annotated[
    int | None,
    typer.Option(
        "--retries",
        min=0,
        max=100,
        help="Extra attempts for an experiment that fails (not for a configuration error or "
        "out of memory); overrides the campaign file's `retries`.",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only the final summary.")]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also notices, settings sources and log paths.")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
Gpus = Annotated[
    str | None,
    typer.Option(
        "--gpus",
        help="GPU indices, e.g. 0,1,2,3: run up to one experiment per GPU at a time, each "
        "pinned to its own GPU(s).",
    ),
]
Cycles = Annotated[
    int | None,
    typer.Option(
        "--cycles", min=1, max=1000, help="Repeat the experiment set N times (overrides)."
    ),
]
OrderOption = Annotated[
    Order | None, typer.Option("--order", help="interleaved, shuffled or grouped (overrides).")
]
RunnerOpt = Annotated[
    RunnerChoice | None,
    typer.Option(
        "--runner",
        help="local, docker (a container per experiment), docker-persistent (one per backend) "
        "or auto; overrides the campaign file and .lem-config.yaml.",
    ),
]
Yes = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Run a campaign of more experiments than max_experiments (.lem-config.yaml, "
        "default 10,000).",
    ),
]
WaitForGpus = Annotated[
    bool,
    typer.Option(
        "--wait-for-gpus/--no-wait-for-gpus",
        help="When another campaign on this host holds a GPU this one needs (the CPU on a host "
        "without GPUs): wait for it (default), or refuse at once (exit 2).",
    ),
]
config_app = typer.Typer(help="What can be configured.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _version(value: bool) -> None:
    if value:
        out.print(f"llenergymeasure {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Measure what LLM inference costs, across deployment configurations."""


CampaignDir = Annotated[Path, typer.Argument(help="Campaign directory (results/<name>_<time>).")]
