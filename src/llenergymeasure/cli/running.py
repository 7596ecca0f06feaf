"""How `lem campaign`, `lem run` and `lem resume` show a run: notices, a dry run's list, the
live events, the summary, and the command that continues."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llenergymeasure.cli.options import err, out
from llenergymeasure.contract import LOG_FILE
from llenergymeasure.errors import printable
from llenergymeasure.redact import redact

if TYPE_CHECKING:
    from llenergymeasure.conductor import ManifestEntry, Plan, RunSummary


@dataclass(frozen=True)
class RunView:
    """How to report a run (the options campaign, run and resume share)."""

    quiet: bool
    verbose: bool
    json_out: bool

    @property
    def verbosity(self) -> int:
        return 0 if self.quiet or self.json_out else (2 if self.verbose else 1)


def parse_gpus(text: str | None) -> tuple[int, ...] | None:
    from llenergymeasure.conductor import parse_gpus

    return parse_gpus(text) if text is not None else None


def start(plan: Plan, options: RunView, dry_run: bool) -> None:
    """A new campaign: show what was planned, then run it (or only show it, dry run)."""
    campaign = plan.campaign
    assert campaign is not None
    if not options.quiet:
        settings_notice(plan)
        for notice in campaign.notices:
            err.print(f"[yellow]notice[/]: {notice}")
        for skipped in campaign.skipped:
            err.print(f"[yellow]skipped[/] {escape(skipped.describe())}")
    if options.verbose:
        print_settings(err, plan.settings.record().model_dump(mode="json"))
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

    execute(plan, options, created)


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
    print_entries(title, rows, json_out)


def execute(plan: Plan, options: RunView, on_created: Callable[[Path], None] | None = None) -> None:
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
            out.print(summary_table(title, summary.statistics))
        _print_outcome(summary, options.verbose)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed or summary.failed_levels:  # a failed level is a failure too
        raise typer.Exit(1)


def settings_notice(plan: Plan) -> None:
    if plan.settings.file is not None:
        err.print(
            f"[yellow]notice[/]: settings from {escape(str(plan.settings.file))}", soft_wrap=True
        )


def print_settings(console: Console, record: dict[str, Any]) -> None:
    """The effective user settings and where each came from (secrets are not in a record)."""
    sources = record.pop("sources", {})
    for key, value in redact(record).items():
        source = next((s for k, s in sources.items() if k == key or k.startswith(f"{key}.")), None)
        console.print(
            f"setting {key} = {escape(str(value))} ({escape(source or 'default')})",
            soft_wrap=True,
            highlight=False,
        )


def _print_outcome(summary: RunSummary, verbose: bool = False) -> None:
    """The end summary: counts, what failed and why, and the command that continues;
    verbose: every run's worker log too."""
    from llenergymeasure.results.collate import RESULTS_CSV, failed_levels_count

    counts = summary.manifest.counts_text() + failed_levels_count(summary.failed_levels)
    out.print(f"{counts}. Results: {summary.campaign_dir / RESULTS_CSV}", soft_wrap=True)
    print_failed_levels(summary.failed_levels)
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
            f"To retry the failed ones: {retry_command(summary.campaign_dir)}", soft_wrap=True
        )


def print_failed_levels(levels: list[dict[str, Any]]) -> None:
    from llenergymeasure.results.collate import failed_levels_text

    for line in failed_levels_text(levels):
        out.print(f"[red]failed[/] {escape(printable(line))}", soft_wrap=True, highlight=False)


def retry_command(campaign_dir: Path) -> str:
    return f"lem resume --retry-failed {campaign_dir}"


def _json_summary(summary: RunSummary) -> dict[str, object]:
    from llenergymeasure.results.collate import RESULTS_CSV

    return {
        "campaign_id": summary.manifest.campaign_id,
        "campaign_dir": str(summary.campaign_dir),
        "counts": summary.manifest.counts(),
        "interrupted": summary.interrupted,
        "results_csv": str(summary.campaign_dir / RESULTS_CSV),
        "failed": [failure(e) for e in summary.failed],
        "failed_levels": summary.failed_levels,
        "retry_command": retry_command(summary.campaign_dir) if summary.failed else None,
    }


def failure(entry: ManifestEntry) -> dict[str, object]:
    return {
        "experiment_id": entry.experiment_id,
        "cycle": entry.cycle,
        "status": entry.status,
        "attempts": entry.attempts,
        "error": entry.error,
    }


SHOWN_ROWS = 50


def print_entries(title: str, rows: list[str], json_out: bool) -> None:
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
