"""`lem doctor`, `lem init` and `lem config list`: this machine, a starter, the parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from llenergymeasure.cli import options as opts
from llenergymeasure.cli.options import app, config_app, out

if TYPE_CHECKING:
    from llenergymeasure.config.describe import Parameter


@app.command()
def doctor(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only the checks that are not ok.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also the hints of checks that are ok.")
    ] = False,
    json_out: opts.JsonOut = False,
) -> None:
    """Check this machine: what it can measure, and what to fix.

    Python, packages, backends, CPU features, NVML and GPUs, Docker and images, results dir,
    HF cache, user settings. Exit 1 if a check fails (warnings: 0)."""
    from llenergymeasure import doctor as checks

    rows = checks.run_checks()
    if json_out:
        out.print(checks.as_json(rows), soft_wrap=True, highlight=False, markup=False)
    else:
        table = Table(title="lem doctor", title_justify="left")
        for column in ("check", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for row in rows:
            if quiet and row.status == "ok":
                continue
            fix = row.fix if row.status != "ok" or verbose else ""
            status = f"[{colour[row.status]}]{row.status}[/]"
            table.add_row(escape(row.name), status, escape(row.detail), escape(fix))
        out.print(table)
        failed = sum(r.status == "fail" for r in rows)
        warned = sum(r.status == "warn" for r in rows)
        out.print(f"{failed} failed, {warned} warning(s), {len(rows) - failed - warned} ok.")
    raise typer.Exit(checks.exit_code(rows))


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to write campaign.yaml and .lem-config.yaml.")
    ] = Path(),
    non_interactive: Annotated[
        bool, typer.Option("--non-interactive", help="Ask nothing: write the defaults.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a commented starter campaign (campaign.yaml) and user settings (.lem-config.yaml)."""
    from llenergymeasure import starter

    has_gpu = Path("/dev/nvidiactl").exists()
    answers = starter.Answers(name=starter.default_name(directory), has_gpu=has_gpu)
    if not non_interactive:
        answers = starter.ask(answers, directory)
    for path in starter.write(directory, answers, force=force):
        out.print(f"wrote {escape(str(path))}", soft_wrap=True)
    out.print(f"Next: lem campaign {escape(str(directory / starter.CAMPAIGN_FILE))} --dry-run")


@config_app.command("list")
def config_list(
    backend: Annotated[
        str | None, typer.Option("--backend", "-b", help="Only this backend's parameters.")
    ] = None,
    json_out: opts.JsonOut = False,
) -> None:
    """Every parameter per backend (type, default, description), and the campaign keys."""
    from llenergymeasure.config.describe import campaign_parameters, parameters
    from llenergymeasure.config.descriptor import backend_names

    tables = {b: parameters(b) for b in ([backend] if backend else backend_names())}
    if not backend:
        tables["campaign file"] = campaign_parameters()
    if json_out:
        out.print_json(json.dumps({k: [p.__dict__ for p in v] for k, v in tables.items()}))
        return
    for title, rows in tables.items():
        out.print(_parameter_table(title, rows))


def _parameter_table(title: str, rows: list[Parameter]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("parameter", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for p in rows:
        table.add_row(*(escape(v) for v in (p.key, p.type, p.default, p.description)))
    return table
