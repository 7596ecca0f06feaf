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
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llenergymeasure import __version__
from llenergymeasure.api import load_results
from llenergymeasure.config.campaign import Order, RunnerChoice
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
from llenergymeasure.orchestrator.schedule import parse_gpus, resolve_execution, run_order
from llenergymeasure.results.collate import RESULTS_CSV

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
CLI_DEFAULT_CYCLES = 3
"""Cycles when neither the campaign file nor --cycles says: enough for a spread and a CI."""
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
    gpus: Gpus = None,
    cycles: Cycles = None,
    order: OrderOption = None,
    runner: RunnerOpt = None,
) -> None:
    """Expand a campaign file's grid and run every experiment, cycle after cycle."""
    overrides = {k: v for k, v in {"cycles": cycles, "order": order}.items() if v is not None}
    loaded = load_campaign(file, overrides=overrides)
    _start(
        loaded,
        output_dir,
        timeout,
        dry_run,
        quiet,
        verbose,
        json_out,
        gpus,
        CLI_DEFAULT_CYCLES,
        runner,
    )


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Experiment YAML file (one configuration).")],
    output_dir: OutputDir = None,
    timeout: Timeout = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: JsonOut = False,
    gpus: Gpus = None,
    runner: RunnerOpt = None,
) -> None:
    """Run a single experiment once (a campaign of one, one cycle)."""
    loaded = load_experiment(file)
    _start(loaded, output_dir, timeout, dry_run, quiet, verbose, json_out, gpus, 1, runner)


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
    gpus: Gpus = None,
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
    pinned = parse_gpus(gpus) if gpus is not None else None
    plan = plan_runner(Workload.of_campaign_dir(directory), runner, load_settings())
    if not quiet:
        err.print(
            f"Resuming {directory}: {len(pending)} of {len(manifest.entries)} to run, "
            f"runner {plan.name}"
        )
    _execute(directory, plan, timeout, quiet, verbose, json_out, pinned)


CampaignDir = Annotated[Path, typer.Argument(help="Campaign directory (results/<name>_<time>).")]


@app.command()
def results(
    campaign_dir: CampaignDir,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="Parameters to group by, e.g. backend,batch_size (default: the campaign's "
            "statistics.group_by, else one group per experiment).",
        ),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Print the statistics across cycles: mean and CI per configuration (or group)."""
    keys = [k.strip() for k in group_by.split(",")] if group_by is not None else None
    loaded = load_results(campaign_dir, group_by=keys)
    if json_out:
        records = json.loads(loaded.summary.to_json(orient="records"))
        data = {
            "campaign_id": loaded.manifest.campaign_id,
            "campaign_dir": str(loaded.campaign_dir),
            "counts": loaded.manifest.counts(),
            "summary": records,
        }
        out.print_json(json.dumps(data))
        return
    out.print(summary_table(f"Campaign {loaded.manifest.campaign_id}", loaded.summary))
    counts = loaded.manifest.counts()
    out.print(f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} pending.")


@app.command()
def report(
    campaign_dir: CampaignDir,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Where to write (default: <campaign>/report)."),
    ] = None,
    timeseries: Annotated[
        list[str] | None,
        typer.Option(
            "--timeseries",
            help="Experiment id (or unique prefix) whose power time-series to plot; repeatable.",
        ),
    ] = None,
) -> None:
    """Write report.html (self-contained) and PNG plots for a campaign."""
    from llenergymeasure.results.report import write_report  # matplotlib: only when asked

    path = write_report(load_results(campaign_dir), output_dir, timeseries)
    out.print(f"Report: {path} (plots beside it)", soft_wrap=True)


def _start(
    loaded: Campaign,
    output_dir: Path | None,
    timeout: float | None,
    dry_run: bool,
    quiet: bool,
    verbose: bool,
    json_out: bool,
    gpus: str | None,
    default_cycles: int,
    runner: RunnerChoice | None,
) -> None:
    pinned = parse_gpus(gpus) if gpus is not None else None
    for notice in loaded.notices:
        err.print(f"[yellow]notice[/]: {notice}")
    config = loaded.config
    cycles = config.cycles or default_cycles
    if dry_run:
        settings = load_settings()
        execution = resolve_execution(config, settings)
        pairs = run_order(len(loaded.experiments), cycles, execution.order, execution.order_seed)
        rows = [
            escape(
                f"{loaded.experiments[i].experiment_id} cycle {c} "
                + ", ".join(f"{k}={v}" for k, v in loaded.experiments[i].label.items())
            )
            for i, c in pairs
        ]
        seed = f", order_seed {execution.order_seed}" if execution.order_seed is not None else ""
        title = (
            f"{len(loaded.experiments)} experiments x {cycles} cycles, order {execution.order}"
            f"{seed}; gaps {execution.gaps.between_experiments_s:g} s between experiments, "
            f"{execution.gaps.between_cycles_s:g} s between cycles"
        )
        _print_entries(title, rows, json_out)
        return
    # Pre-flight before the campaign directory exists: a missing image leaves nothing behind.
    plan = plan_runner(Workload.of_campaign(loaded, output_dir), runner, load_settings())
    directory = create_campaign(loaded, output_dir, default_cycles=default_cycles)
    if not quiet:
        err.print(
            f"Campaign {config.name}: {len(loaded.experiments)} experiments x "
            f"{cycles} cycle(s), runner {plan.name}, in {directory}"
        )
    _execute(directory, plan, timeout, quiet, verbose, json_out, pinned)


def _execute(
    directory: Path,
    plan: RunnerPlan,
    timeout: float | None,
    quiet: bool,
    verbose: bool,
    json_out: bool,
    gpus: tuple[int, ...] | None,
) -> None:
    for notice in plan.notices:
        err.print(f"[yellow]notice[/]: {escape(notice)}", soft_wrap=True)
    verbosity = 0 if quiet or json_out else (2 if verbose else 1)
    with ConsoleEvents(err, verbosity) as events:
        summary = run_campaign_dir(
            directory, events=events, runner=plan.open(directory), timeout_s=timeout, gpus=gpus
        )
    if json_out:
        out.print_json(json.dumps(_json_summary(summary)))
    else:
        if not quiet and summary.statistics is not None:
            title = f"Campaign {summary.manifest.campaign_id}"
            out.print(summary_table(title, summary.statistics))
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
