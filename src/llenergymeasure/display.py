"""What the CLI shows while a campaign runs and when it ends (rich, on stderr/stdout)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llenergymeasure.orchestrator.campaign import Events, RunSummary
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.results.schema import ExperimentResult


def describe(entry: ManifestEntry) -> str:
    label = ", ".join(f"{k}={v}" for k, v in entry.label.items())
    text = f"{entry.experiment_id} cycle {entry.cycle}" + (f" ({label})" if label else "")
    return escape(text)


class ConsoleEvents(Events):
    """A progress bar plus one line per finished experiment. verbosity: 0 quiet, 1, 2."""

    def __init__(self, console: Console, verbosity: int = 1) -> None:
        self.console, self.verbosity = console, verbosity
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[current]}"),
            console=console,
            disable=verbosity == 0,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> ConsoleEvents:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def notice(self, message: str) -> None:
        if self.verbosity:
            self.console.print(f"[yellow]notice[/]: {escape(message)}", soft_wrap=True)

    def campaign_started(self, manifest: Manifest, to_run: list[ManifestEntry]) -> None:
        done = len(manifest.entries) - len(to_run)
        self.task = self.progress.add_task(
            manifest.campaign_id, total=len(manifest.entries), completed=done, current=""
        )

    def experiment_started(self, entry: ManifestEntry) -> None:
        self.progress.update(self.task, current=f"running {describe(entry)}")

    def experiment_finished(self, entry: ManifestEntry, result: ExperimentResult | None) -> None:
        self.progress.advance(self.task)
        self.progress.update(self.task, current="")
        if self.verbosity == 0:
            return
        if result is not None:
            energy = result.energy.energy_raw_per_output_token_j
            energy_text = f"{energy:.4g} J/token" if energy is not None else "energy n/a"
            self.console.print(
                f"[green]done[/] {describe(entry)}: {result.output_tokens} tokens in "
                f"{result.measured_duration_s:.2f} s, {result.output_tokens_per_s:.1f} tokens/s, "
                f"{energy_text}"
            )
        else:
            self.console.print(f"[red]failed[/] {describe(entry)}: {escape(entry.error or '')}")


def summary_table(summary: RunSummary, results: list[ExperimentResult]) -> Table:
    """Per experiment (means over its done cycles): throughput, latency, memory, energy."""
    by_id: dict[str, list[ExperimentResult]] = {}
    for result in results:
        by_id.setdefault(result.experiment_id, []).append(result)
    table = Table(title=f"Campaign {summary.manifest.campaign_id}")
    table.add_column("experiment")
    for column in ("cycles done", "tokens/s", "p50 latency s", "peak MB", "J/token"):
        table.add_column(column, justify="right")
    seen: set[str] = set()
    for entry in summary.manifest.entries:
        if entry.experiment_id in seen:
            continue
        seen.add(entry.experiment_id)
        runs = by_id.get(entry.experiment_id, [])
        label = ", ".join(f"{k}={v}" for k, v in entry.label.items()) or entry.experiment_id
        if not runs:
            table.add_row(escape(label), "0", "-", "-", "-", "-")
            continue
        energies = [r.energy.energy_raw_per_output_token_j for r in runs]
        known = [e for e in energies if e is not None]
        peaks = [r.peak_memory_mb for r in runs if r.peak_memory_mb is not None]
        table.add_row(
            escape(label),
            f"{len(runs)}/{summary.manifest.total_cycles}",
            f"{_mean([r.output_tokens_per_s for r in runs]):.1f}",
            f"{_mean([r.latency.p50_s for r in runs]):.3f}",
            f"{_mean(peaks):.0f}" if peaks else "n/a",
            f"{_mean(known):.4g}" if known else "n/a",
        )
    return table


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
