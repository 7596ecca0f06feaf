"""`lem`: run measurement campaigns from the shell.

Exit codes: 0 everything done; 1 some experiments failed (the rest finished); 2 bad input
(also: the campaign is locked by another orchestrator); 130 interrupted (finished results are
kept; `lem resume` continues).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llenergymeasure.config.choices import Order, RunnerChoice
from llenergymeasure.console import cli_console
from llenergymeasure.contract import LOG_FILE
from llenergymeasure.errors import LemError, printable
from llenergymeasure.faces import cli_flag
from llenergymeasure.permissions import no_world_write
from llenergymeasure.version import __version__

if TYPE_CHECKING:
    from llenergymeasure.conductor import ManifestEntry, Plan, RunSummary
    from llenergymeasure.config.describe import Parameter

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
    retries: Retries = None,
    yes: Yes = False,
    wait_for_gpus: WaitForGpus = True,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="A batch runner: submit every run and return; `lem status` shows them, "
            "`lem resume` collates them.",
        ),
    ] = False,
) -> None:
    """Expand a campaign file's grid and run every experiment, cycle after cycle."""
    from llenergymeasure import conductor
    from llenergymeasure.config.grid import load_campaign

    overrides = conductor.Overrides(
        output_dir=output_dir,
        cycles=cycles,
        order=order,
        runner=runner,
        timeout_s=timeout,
        retries=retries,
        gpus=_parse_gpus(gpus),
        allow_large=yes,
        wait_for_gpus=wait_for_gpus,
    )
    plan = conductor.plan_campaign(
        lambda keys, limit: load_campaign(file, overrides=keys, max_experiments=limit), overrides
    )
    if detach and not dry_run:
        done = conductor.detach(plan)
        if json_out:
            out.print_json(
                json.dumps({"campaign_dir": str(done.campaign_dir), "jobs": done.job_ids})
            )
        elif not quiet:
            err.print(
                f"Submitted {len(done.job_ids)} runs in {done.arrays} {done.scheduler} job "
                f"array(s) for {done.campaign_dir}; `lem status {done.campaign_dir}` shows them, "
                f"`lem resume {done.campaign_dir}` collates them.",
                soft_wrap=True,
            )
        return
    _start(plan, _Run(quiet, verbose, json_out, single=False), dry_run)


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
    retries: Retries = None,
    wait_for_gpus: WaitForGpus = True,
) -> None:
    """Run a single experiment once (a campaign of one, one cycle)."""
    from llenergymeasure import conductor
    from llenergymeasure.config.grid import load_experiment

    overrides = conductor.Overrides(
        output_dir=output_dir,
        runner=runner,
        timeout_s=timeout,
        retries=retries,
        gpus=_parse_gpus(gpus),
        wait_for_gpus=wait_for_gpus,
    )
    plan = conductor.plan_campaign(lambda _keys, _limit: load_experiment(file), overrides)
    _start(plan, _Run(quiet, verbose, json_out, single=True), dry_run)


@app.command()
def resume(
    campaign_dir: Annotated[
        Path | None,
        typer.Argument(help="Campaign directory; default: the newest unfinished one."),
    ] = None,
    results_dir: Annotated[
        Path | None,
        typer.Option(
            "--results-dir",
            help="Where to look for campaigns (default: results_dir of the user settings).",
        ),
    ] = None,
    timeout: Timeout = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: JsonOut = False,
    gpus: Gpus = None,
    runner: RunnerOpt = None,
    retries: Retries = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="Also run the experiments that failed (failed, oom) again."
        ),
    ] = False,
    force_unlock: Annotated[
        bool,
        typer.Option(
            FORCE_FLAG,
            help="Take over the campaign's lock although it names another machine (only once "
            "you know no orchestrator runs it there).",
        ),
    ] = False,
    wait_for_gpus: WaitForGpus = True,
) -> None:
    """Finish a campaign with the settings it was created with.

    Flags given here override those settings and are recorded. Runs what has not ended
    (pending, interrupted, and running when its orchestrator died); finished results are
    never redone. Failed experiments only run again with --retry-failed."""
    from llenergymeasure import conductor

    root, found = conductor.resumable(campaign_dir, results_dir, retry_failed)
    if found is None:
        if not quiet:
            err.print(f"Nothing to resume: no unfinished campaign under {root}/")
        if json_out:
            out.print_json(json.dumps({"campaign_dir": None, "experiments": []}))
        return
    directory, manifest, pending = found.campaign_dir, found.manifest, found.pending
    if dry_run:
        missing = " (result.json missing)"
        rows = [describe(e) + (missing if found.result_missing(e) else "") for e in pending]
        _print_entries(f"Would run ({len(pending)})", rows, json_out)
        return
    if not pending and not found.unfinished:
        if json_out:
            _print_entries("Would run (0)", [], json_out)
        failed = manifest.failed()
        if not failed:
            if not quiet:
                err.print(f"{directory}: every experiment is done; nothing to resume.")
            return
        err.print(
            f"{directory}: nothing left to run but {len(failed)} failed; to run them "
            f"again: {_retry_command(directory)}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    overrides = conductor.Overrides(
        runner=runner,
        timeout_s=timeout,
        retries=retries,
        gpus=_parse_gpus(gpus),
        retry_failed=retry_failed,
        force_unlock=force_unlock,
        wait_for_gpus=wait_for_gpus,
    )
    plan = conductor.plan_resume(directory, overrides)
    options = _Run(quiet, verbose, json_out, single=False)
    if not quiet and not json_out:
        err.print(
            f"Resuming {directory}: {len(pending)} of {len(manifest.entries)} to run, "
            f"runner {plan.runner.name}"
        )
    _execute(plan, options)


CampaignDir = Annotated[Path, typer.Argument(help="Campaign directory (results/<name>_<time>).")]


@app.command()
def status(campaign_dir: CampaignDir, json_out: JsonOut = False) -> None:
    """Where each run stands: the manifest, and a batch scheduler's state for runs it holds."""
    from collections import Counter

    from llenergymeasure import conductor

    rows = conductor.status(campaign_dir)
    if json_out:
        out.print_json(json.dumps([r.__dict__ for r in rows]))
        return
    out.print(", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in rows).items())))
    for r in rows:
        job = f" job {r.job_id}" if r.job_id else ""
        out.print(escape(f"{r.key}: {r.status}{job} {r.detail}".rstrip()), soft_wrap=True)


@app.command()
def repair(
    campaign_dir: CampaignDir,
    force_unlock: Annotated[
        bool,
        typer.Option(FORCE_FLAG, help="Take over a lock that names another machine."),
    ] = False,
) -> None:
    """Rebuild a damaged manifest.json from the result files and the journal; says what it
    could not recover. The damaged files are kept beside it."""
    from llenergymeasure import conductor

    report = conductor.repair(campaign_dir, force_unlock=force_unlock, notice=err.print)
    for line in report.lines():
        out.print(escape(line), soft_wrap=True, highlight=False)


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the counts.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also failures and the recorded settings.")
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Print the statistics across cycles: mean and CI per configuration (or group)."""
    from llenergymeasure.api import load_results
    from llenergymeasure.display import summary_table

    keys = [k.strip() for k in group_by.split(",")] if group_by is not None else None
    loaded = load_results(campaign_dir, group_by=keys)
    manifest = loaded.manifest
    recorded = manifest.execution.settings
    if json_out:
        records = json.loads(loaded.summary.to_json(orient="records"))
        data = {
            "campaign_id": manifest.campaign_id,
            "campaign_dir": str(loaded.campaign_dir),
            "counts": manifest.counts(),
            "settings": recorded.model_dump(mode="json") if recorded is not None else None,
            "failed": [_failure(e) for e in loaded.failed],
            "summary": records,
        }
        out.print_json(json.dumps(data))
        return
    if not quiet:
        out.print(summary_table(f"Campaign {manifest.campaign_id}", loaded.summary))
    out.print(f"{manifest.counts_text()}.")
    if verbose:
        for entry in loaded.failed:
            error = escape(printable(entry.error or ""))
            out.print(f"[red]{entry.status}[/] {describe(entry)}: {error}", soft_wrap=True)
        if recorded is not None:
            _print_settings(out, recorded.model_dump(mode="json"))


@app.command()
def compare(
    campaign_dir: CampaignDir,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline", help="Experiment id, unique prefix or label; default: all pairs."
        ),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Ratios of energy per output token, throughput and p99 latency, paired by cycle, with
    bootstrap intervals and Holm-corrected p-values."""
    from llenergymeasure.api import load_results
    from llenergymeasure.results import compare as cmp

    loaded = load_results(campaign_dir)
    stats = loaded.manifest.execution.statistics
    labels = cmp.run_labels(loaded.runs)
    found = cmp.compare(
        loaded.runs,
        baseline,
        labels=labels,
        resamples=stats.bootstrap_resamples,
        confidence=stats.confidence,
        seed=stats.seed,
    )
    if json_out:
        rows = [c.as_dict() | {"label": labels.get(c.experiment_id)} for c in found]
        out.print_json(json.dumps({"correction": cmp.CORRECTION, "comparisons": rows}))
        return
    out.print(cmp.render(found, labels, stats.confidence))


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
    from llenergymeasure.api import load_results
    from llenergymeasure.results.report import write_report  # matplotlib: only when asked

    path = write_report(load_results(campaign_dir), output_dir, timeseries)
    out.print(f"Report: {path} (plots beside it)", soft_wrap=True)


@app.command()
def doctor(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only the checks that are not ok.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also the hints of checks that are ok.")
    ] = False,
    json_out: JsonOut = False,
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
    json_out: JsonOut = False,
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


@dataclass(frozen=True)
class _Run:
    """How to report a run (the options campaign, run and resume share)."""

    quiet: bool
    verbose: bool
    json_out: bool
    single: bool
    """One experiment, one run (`lem run`): no caveat about too few runs for a CI."""

    @property
    def verbosity(self) -> int:
        return 0 if self.quiet or self.json_out else (2 if self.verbose else 1)


def _parse_gpus(text: str | None) -> tuple[int, ...] | None:
    from llenergymeasure.conductor import parse_gpus

    return parse_gpus(text) if text is not None else None


def _start(plan: Plan, options: _Run, dry_run: bool) -> None:
    """A new campaign: show what was planned, then run it (or only show it, dry run)."""
    campaign = plan.campaign
    assert campaign is not None
    if not options.quiet:
        for notice in campaign.notices:
            err.print(f"[yellow]notice[/]: {notice}")
        for skipped in campaign.skipped:
            err.print(f"[yellow]skipped[/] {escape(skipped.describe())}")
    if options.verbose:
        _print_settings(err, plan.settings.record().model_dump(mode="json"))
    if dry_run:
        _print_dry_run(plan, options.json_out)
        return
    n = len(campaign.experiments)

    def created(directory: Path) -> None:
        if not options.quiet and not options.json_out:
            err.print(
                f"Campaign {campaign.config.name}: {n} experiments x {plan.cycles} cycle(s), "
                f"runner {plan.runner.name}, in {directory}"
            )

    _execute(plan, options, created)


def _print_dry_run(plan: Plan, json_out: bool) -> None:
    from llenergymeasure.conductor import planned_runs

    execution, runs = planned_runs(plan)
    experiments = plan.campaign.experiments if plan.campaign else []
    rows = [
        escape(f"{e.experiment_id} cycle {c} " + ", ".join(f"{k}={v}" for k, v in e.label.items()))
        for e, c in runs
    ]
    seed = f", order_seed {execution.order_seed}" if execution.order_seed is not None else ""
    title = (
        f"{len(experiments)} experiments x {plan.cycles} cycles, order {execution.order}"
        f"{seed}; gaps {execution.gaps.between_experiments_s:g} s between experiments, "
        f"{execution.gaps.between_cycles_s:g} s between cycles"
    )
    _print_entries(title, rows, json_out)


def _execute(plan: Plan, options: _Run, on_created: Callable[[Path], None] | None = None) -> None:
    from llenergymeasure import conductor
    from llenergymeasure.display import ConsoleEvents

    verbosity = options.verbosity
    if verbosity:
        for notice in plan.runner.notices:
            err.print(f"[yellow]notice[/]: {escape(notice)}", soft_wrap=True)

    def problem(message: str) -> None:
        if verbosity:
            err.print(f"[yellow]warning[/]: {escape(message)}", soft_wrap=True)

    with ConsoleEvents(err, verbosity) as events:
        summary = conductor.execute(plan, events, problem, on_created)
    if options.json_out:
        out.print_json(json.dumps(_json_summary(summary)))
    else:
        if not options.quiet and summary.statistics is not None:
            from llenergymeasure.display import summary_table

            title = f"Campaign {summary.manifest.campaign_id}"
            out.print(summary_table(title, summary.statistics, caveat=not options.single))
        _print_outcome(summary, options.verbose)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(1)


def _print_settings(console: Console, record: dict[str, Any]) -> None:
    """The effective user settings and where each came from (secrets are not in a record)."""
    sources = record.pop("sources", {})
    for key, value in record.items():
        source = next((s for k, s in sources.items() if k == key or k.startswith(f"{key}.")), None)
        console.print(
            f"setting {key} = {escape(str(value))} ({escape(source or 'default')})",
            soft_wrap=True,
            highlight=False,
        )


def _print_outcome(summary: RunSummary, verbose: bool = False) -> None:
    """The end summary: counts, what failed and why, and the command that continues;
    verbose: every run's worker log too."""
    from llenergymeasure.results.collate import RESULTS_CSV

    out.print(
        f"{summary.manifest.counts_text()}. Results: {summary.campaign_dir / RESULTS_CSV}",
        soft_wrap=True,
    )
    if verbose:
        for entry in summary.ran:
            if entry.status == "done":
                log = summary.campaign_dir / Path(entry.exp_path).parent / LOG_FILE
                out.print(f"done {describe(entry)}: log {escape(str(log))}", soft_wrap=True)
    if summary.recovered:
        out.print(f"{len(summary.recovered)} finished before a crash and were recovered.")
    for entry in summary.failed:
        tries = f" (attempt {entry.attempts})" if entry.attempts > 1 else ""
        out.print(
            f"[red]{entry.status}[/] {describe(entry)}{tries}: {escape(entry.error or '')}",
            soft_wrap=True,
        )
        log = summary.campaign_dir / Path(entry.exp_path).parent / LOG_FILE
        out.print(f"  log: {escape(str(log))}", soft_wrap=True)
    if summary.interrupted or summary.manifest.pending():
        out.print(f"To run what is not done: lem resume {summary.campaign_dir}", soft_wrap=True)
    if summary.failed:
        out.print(
            f"To retry the failed ones: {_retry_command(summary.campaign_dir)}", soft_wrap=True
        )


def _retry_command(campaign_dir: Path) -> str:
    return f"lem resume --retry-failed {campaign_dir}"


def _json_summary(summary: RunSummary) -> dict[str, object]:
    from llenergymeasure.results.collate import RESULTS_CSV

    return {
        "campaign_id": summary.manifest.campaign_id,
        "campaign_dir": str(summary.campaign_dir),
        "counts": summary.manifest.counts(),
        "interrupted": summary.interrupted,
        "results_csv": str(summary.campaign_dir / RESULTS_CSV),
        "failed": [_failure(e) for e in summary.failed],
        "retry_command": _retry_command(summary.campaign_dir) if summary.failed else None,
    }


def _failure(entry: ManifestEntry) -> dict[str, object]:
    return {
        "experiment_id": entry.experiment_id,
        "cycle": entry.cycle,
        "status": entry.status,
        "attempts": entry.attempts,
        "error": entry.error,
    }


SHOWN_ROWS = 50


def _print_entries(title: str, rows: list[str], json_out: bool) -> None:
    """A dry run's list. With --json every row, as plain JSON (rich's highlighting took 6 s
    for a 100,000-experiment resume); the table shows the first SHOWN_ROWS (rendering 100,000
    rows took 12 s, for a list nobody reads to the end)."""
    if json_out:
        sys.stdout.write(json.dumps({"title": title, "experiments": rows}, indent=2) + "\n")
        return
    table = Table(title=title, show_header=False)
    table.add_column("experiment")
    for row in rows[:SHOWN_ROWS]:
        table.add_row(row)
    if len(rows) > SHOWN_ROWS:
        table.add_row(f"... and {len(rows) - SHOWN_ROWS:,} more (--json lists them all)")
    out.print(table)


def describe(entry: ManifestEntry) -> str:
    from llenergymeasure.display import describe as shown

    return shown(entry)


def cli(argv: Sequence[str] | None = None) -> int:
    """Run `lem ARGV` and return its exit code: a LemError or a usage error becomes one clear
    message on stderr (exit code 2 for bad input), never a traceback. Whatever it writes is
    not world-writable, whatever the umask."""
    try:
        with no_world_write():
            command = _plain_flags(typer.main.get_command(app))
            args = list(argv) if argv is not None else None
            code = command.main(args=args, prog_name="lem", standalone_mode=False)
    except LemError as e:
        # soft_wrap: a fix command in the message must stay one line to copy
        message = escape(printable(str(e)))
        err.print(f"[red]error[/]: {message}", highlight=False, soft_wrap=True)
        return e.exit_code
    except typer.TyperException as e:  # usage errors (typer vendors click): exit code 2
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"error: {escape(printable(e.format_message()))}", highlight=False)
        return e.exit_code
    except OSError as e:
        from llenergymeasure.storage import storage_message

        line = storage_message(e)
        if line is None:
            raise
        err.print(f"[red]error[/]: {escape(printable(line))}", highlight=False, soft_wrap=True)
        return 1
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        return 130
    return code if isinstance(code, int) else 0


def _plain_flags(command: Any) -> Any:
    """Show on/off flags as `--quiet`, not `--quiet <bool>`: a flag takes no value."""
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    make_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub)
    return command


def main() -> None:
    """Console entry point."""
    sys.exit(cli())


if __name__ == "__main__":
    main()
