"""`lem`: run measurement campaigns from the shell.

Exit codes: 0 everything done; 1 some experiments failed (the rest finished); 2 bad input;
130 interrupted (finished results are kept; `lem resume` continues).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llenergymeasure import __version__
from llenergymeasure.config.campaign import RunnerChoice
from llenergymeasure.config.grid import Campaign, load_campaign, load_experiment
from llenergymeasure.config.settings import load_settings
from llenergymeasure.display import ConsoleEvents, describe, summary_table
from llenergymeasure.errors import LemError
from llenergymeasure.orchestrator.campaign import (
    RunSummary,
    create_campaign,
    run_campaign_dir,
)
from llenergymeasure.orchestrator.manifest import MANIFEST_FILE, ManifestStore
from llenergymeasure.orchestrator.runners.select import RunnerPlan, Workload, plan_runner
from llenergymeasure.results.collate import RESULTS_CSV
from llenergymeasure.results.schema import ExperimentResult

app = typer.Typer(
    help="LLenergyMeasure: measure the energy, throughput and latency of LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

OutputDir = Annotated[
    Path | None, typer.Option("--output-dir", "-o", help="Results root (overrides the file).")
]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", min=0.001, help="Per-experiment limit in seconds (overrides)."),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would run; run nothing.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only the final summary.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show notices and log paths.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
RunnerOpt = Annotated[
    RunnerChoice | None,
    typer.Option(
        "--runner",
        help="local, docker (a container per experiment), docker-persistent (one per backend) "
        "or auto; overrides the campaign file and .lem-config.yaml.",
    ),
]


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


@app.command()
def campaign(
    file: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    output_dir: OutputDir = None,
    timeout: Timeout = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: JsonOut = False,
    runner: RunnerOpt = None,
) -> None:
    """Expand a campaign file's grid and run every experiment."""
    _start(load_campaign(file), output_dir, timeout, dry_run, quiet, verbose, json_out, runner)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Experiment YAML file (one configuration).")],
    output_dir: OutputDir = None,
    timeout: Timeout = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: JsonOut = False,
    runner: RunnerOpt = None,
) -> None:
    """Run a single experiment (a campaign of one)."""
    _start(load_experiment(file), output_dir, timeout, dry_run, quiet, verbose, json_out, runner)


@app.command()
def resume(
    campaign_dir: Annotated[
        Path | None,
        typer.Argument(help="Campaign directory; default: the newest unfinished one."),
    ] = None,
    results_dir: Annotated[
        Path, typer.Option("--results-dir", help="Where to look for campaigns.")
    ] = Path("results"),
    timeout: Timeout = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: JsonOut = False,
    runner: RunnerOpt = None,
) -> None:
    """Finish an interrupted campaign: run exactly the experiments that are not done."""
    directory = campaign_dir or _newest_unfinished(results_dir)
    if directory is None:
        err.print(f"Nothing to resume: no unfinished campaign under {results_dir}/")
        return
    manifest = ManifestStore(directory).load()
    pending = manifest.pending()
    if dry_run or not pending:
        if not pending:
            err.print(f"{directory}: every experiment is done; nothing to resume.")
        _print_entries(f"Would run ({len(pending)})", [describe(e) for e in pending], json_out)
        return
    plan = plan_runner(Workload.of_campaign_dir(directory), runner, load_settings())
    if not quiet:
        err.print(
            f"Resuming {directory}: {len(pending)} of {len(manifest.entries)} to run, "
            f"runner {plan.name}"
        )
    _execute(directory, plan, timeout, quiet, verbose, json_out)


def _start(
    loaded: Campaign,
    output_dir: Path | None,
    timeout: float | None,
    dry_run: bool,
    quiet: bool,
    verbose: bool,
    json_out: bool,
    runner: RunnerChoice | None,
) -> None:
    for notice in loaded.notices:
        err.print(f"[yellow]notice[/]: {notice}")
    cycles = loaded.config.cycles
    if dry_run:
        rows = [
            escape(f"{e.experiment_id} " + ", ".join(f"{k}={v}" for k, v in e.label.items()))
            for e in loaded.experiments
        ]
        _print_entries(f"{len(loaded.experiments)} experiments x {cycles} cycles", rows, json_out)
        return
    # Pre-flight before the campaign directory exists: a missing image leaves nothing behind.
    plan = plan_runner(Workload.of_campaign(loaded, output_dir), runner, load_settings())
    directory = create_campaign(loaded, output_dir)
    if not quiet:
        err.print(
            f"Campaign {loaded.config.name}: {len(loaded.experiments)} experiments x "
            f"{cycles} cycle(s), runner {plan.name}, in {directory}"
        )
    _execute(directory, plan, timeout, quiet, verbose, json_out)


def _execute(
    directory: Path,
    plan: RunnerPlan,
    timeout: float | None,
    quiet: bool,
    verbose: bool,
    json_out: bool,
) -> None:
    for notice in plan.notices:
        err.print(f"[yellow]notice[/]: {escape(notice)}", soft_wrap=True)
    verbosity = 0 if quiet or json_out else (2 if verbose else 1)
    with ConsoleEvents(err, verbosity) as events:
        summary = run_campaign_dir(
            directory, events=events, runner=plan.open(directory), timeout_s=timeout
        )
    results = _load_results(summary)
    if json_out:
        out.print_json(json.dumps(_json_summary(summary)))
    else:
        if not quiet:
            out.print(summary_table(summary, results))
        _print_outcome(summary, verbose)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(1)


def _print_outcome(summary: RunSummary, verbose: bool) -> None:
    counts = summary.manifest.counts()
    out.print(
        f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} pending. "
        f"Results: {summary.campaign_dir / RESULTS_CSV}",
        soft_wrap=True,
    )
    if summary.recovered:
        out.print(f"{len(summary.recovered)} finished before a crash and were recovered.")
    for entry in summary.failed:
        out.print(f"[red]failed[/] {describe(entry)}: {escape(entry.error or '')}")
        if verbose:
            out.print(f"  log: {summary.campaign_dir / Path(entry.exp_path).parent / 'worker.log'}")
    if summary.failed or summary.interrupted:
        out.print(f"To run what is not done: lem resume {summary.campaign_dir}", soft_wrap=True)


def _json_summary(summary: RunSummary) -> dict[str, object]:
    return {
        "campaign_id": summary.manifest.campaign_id,
        "campaign_dir": str(summary.campaign_dir),
        "counts": summary.manifest.counts(),
        "interrupted": summary.interrupted,
        "results_csv": str(summary.campaign_dir / RESULTS_CSV),
        "failed": [
            {"experiment_id": e.experiment_id, "cycle": e.cycle, "error": e.error}
            for e in summary.failed
        ],
    }


def _load_results(summary: RunSummary) -> list[ExperimentResult]:
    results = []
    for entry in summary.manifest.entries:
        if entry.status == "done" and entry.result_path:
            try:
                path = summary.campaign_dir / entry.result_path
                results.append(ExperimentResult.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError):
                continue
    return results


def _print_entries(title: str, rows: list[str], json_out: bool) -> None:
    if json_out:
        out.print_json(json.dumps({"title": title, "experiments": rows}))
        return
    table = Table(title=title, show_header=False)
    table.add_column("experiment")
    for row in rows:
        table.add_row(row)
    out.print(table)


def _newest_unfinished(results_dir: Path) -> Path | None:
    candidates = []
    for manifest_path in results_dir.glob(f"*/{MANIFEST_FILE}"):
        try:
            manifest = ManifestStore(manifest_path.parent).load()
        except LemError:
            continue
        if manifest.pending():
            candidates.append((manifest.created_at, manifest_path.parent))
    return max(candidates)[1] if candidates else None


def main() -> None:
    """Console entry point: LemError -> one clear message and its exit code."""
    try:
        code = app(standalone_mode=False)
    except LemError as e:
        # soft_wrap: a fix command in the message must stay one line to copy
        err.print(f"[red]error[/]: {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # usage errors (typer vendors click): exit code 2
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"error: {escape(e.format_message())}", highlight=False)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
