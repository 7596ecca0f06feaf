"""What the CLI shows while a campaign runs and when it ends (rich, on stderr/stdout)."""

from __future__ import annotations

import math
import re
import time
from types import TracebackType
from typing import Any

import pandas as pd
from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llenergymeasure.orchestrator.campaign import Events
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.results.aggregate import QUALITY, VARIES_WITHIN
from llenergymeasure.results.schema import ExperimentResult
from llenergymeasure.stats import MEAN_METHOD


def describe(entry: ManifestEntry) -> str:
    label = ", ".join(f"{k}={v}" for k, v in entry.label.items())
    text = f"{entry.experiment_id} cycle {entry.cycle}" + (f" ({label})" if label else "")
    return escape(text)


class ConsoleEvents(Events):
    """A progress bar plus one line per finished experiment, each with the count done, the
    failures, the elapsed time and an ETA (so a log or a pipe, which show no bar, have them
    too). verbosity: 0 quiet, 1, 2."""

    def __init__(self, console: Console, verbosity: int = 1) -> None:
        self.console, self.verbosity = console, verbosity
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[current]}"),
            console=console,
            disable=verbosity == 0,
            transient=True,
        )
        self.task: Any = None
        self.running: dict[str, str] = {}
        self.last_wait: tuple[str, str] | None = None
        self.warned: set[str] = set()
        self.eta = Eta()

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
        self.eta = Eta(total=len(manifest.entries), ended=done, failed=len(manifest.failed()))
        self.task = self.progress.add_task(
            manifest.campaign_id,
            total=len(manifest.entries),
            completed=done,
            current="",
            eta=self.eta.text(),
        )

    def experiment_started(self, entry: ManifestEntry) -> None:
        self.running[entry.key] = f"{describe(entry)}{_on_gpus(entry)}"
        self._show_running()
        for warning in entry.warnings:
            if self.verbosity >= 1 and warning not in self.warned:  # each text once
                self.warned.add(warning)
                self.console.print(f"[yellow]warning[/] {describe(entry)}: {escape(warning)}")

    def _show_running(self) -> None:
        running = "; ".join(self.running.values())
        self.progress.update(self.task, current=f"running {running}" if running else "")

    def waiting(self, entry: ManifestEntry, reason: str, remaining_s: float) -> None:
        text = f"waiting {math.ceil(remaining_s)} s ({escape(reason)}) before {describe(entry)}"
        self.progress.update(self.task, current=text)
        # Without a live display (a log, a pipe) say once per wait what is happening.
        fresh = self.last_wait != (entry.key, reason)
        if self.verbosity >= 1 and not self.console.is_terminal and fresh:
            self.console.print(text)
        self.last_wait = (entry.key, reason)

    def experiment_finished(self, entry: ManifestEntry, result: ExperimentResult | None) -> None:
        self.eta.ended_one(failed=entry.status in ("failed", "oom"))
        self.progress.update(self.task, advance=1, eta=self.eta.text())
        self.running.pop(entry.key, None)
        self._show_running()
        if self.verbosity == 0:
            return
        progress = f" [dim]\\[{self.eta.text()}][/]"
        if result is not None:
            energy = result.energy.energy_raw_per_output_token_j
            energy_text = f"{energy:.4g} J/token" if energy is not None else "energy n/a"
            self.console.print(
                f"[green]done[/] {describe(entry)}{_on_gpus(entry)}: {result.output_tokens} "
                f"tokens in {result.measured_duration_s:.2f} s, "
                f"{result.output_tokens_per_s:.1f} tokens/s, "
                f"{energy_text}{progress}"
            )
        else:
            colour = "yellow" if entry.status == "interrupted" else "red"
            self.console.print(
                f"[{colour}]{entry.status}[/] {describe(entry)}: {escape(entry.error or '')}"
                f"{progress}"
            )

    def experiment_retried(self, entry: ManifestEntry, attempt: int, of: int) -> None:
        self.running.pop(entry.key, None)
        self._show_running()
        if self.verbosity:
            self.console.print(
                f"[yellow]retry[/] {describe(entry)} (attempt {attempt} of {of}) after: "
                f"{escape(entry.error or '')}"
            )


class Eta:
    """Runs ended of the campaign's total, failures, elapsed time, and the time left at the
    pace of the runs that ended since this orchestrator started (runs ended earlier, before a
    resume, say nothing about this machine's pace now)."""

    def __init__(self, total: int = 0, ended: int = 0, failed: int = 0) -> None:
        self.total, self.ended, self.failed = total, ended, failed
        self.ended_here = 0
        self.started = time.monotonic()

    def ended_one(self, failed: bool) -> None:
        self.ended += 1
        self.ended_here += 1
        self.failed += failed

    def text(self) -> str:
        elapsed_s = time.monotonic() - self.started
        left = self.total - self.ended
        if self.ended_here and left:
            eta = f"ETA {_clock(elapsed_s / self.ended_here * left)}"
        else:
            eta = "ETA -" if left else "finished"
        return (
            f"{self.ended}/{self.total} ended, {self.failed} failed, "
            f"{_clock(elapsed_s)} elapsed, {eta}"
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _on_gpus(entry: ManifestEntry) -> str:
    return f" on GPU {','.join(map(str, entry.gpus))}" if entry.gpus is not None else ""


TABLE_METRICS = {
    "output_tokens_per_s": "tokens/s",
    "latency_p50_s": "p50 latency s",
    "energy_raw_per_output_token_j": "J/token",
    "energy_adjusted_per_output_token_j": "J/token adjusted",
}


def summary_table(title: str, statistics: pd.DataFrame, verbose: bool = False) -> Group:
    """One row per group of summary.csv: a column per swept parameter, the mean and CI of the
    headline metrics, and the quality: compact (status, runs flagged, a code per kind of
    reason, the codes explained once below the table) or, verbose, every reason in full."""
    table = Table(title=title)
    labels = list(statistics.columns[: list(statistics.columns).index("n_experiments")])
    shown = [c for c in labels if c != "experiment_id"] or labels
    for column in shown:
        table.add_column("experiment" if column == "experiment_id" else column)
    table.add_column("runs", justify="right")
    for name in TABLE_METRICS.values():
        table.add_column(name, justify="right")
    quality = QUALITY in statistics.columns
    if quality:
        table.add_column("quality", max_width=None if verbose else 24)
    codes: dict[str, str] = {}
    for _, group in statistics.groupby(labels, dropna=False, sort=False):
        by_metric = {row["metric"]: row for _, row in group.iterrows()}
        first = group.iloc[0]
        cells = [_cell(first[c]) for c in shown]
        if first.get(VARIES_WITHIN):
            cells[-1] += f"\n(pools {first[VARIES_WITHIN]})"
        note = str(first[QUALITY]) if quality else ""
        table.add_row(
            *map(escape, cells),
            str(by_metric["output_tokens_per_s"]["n"]),
            *(_estimate(by_metric[m]) for m in TABLE_METRICS),
            *([escape(note if verbose else _quality_code(note, codes))] if quality else []),
        )
    if len(statistics):
        confidence = float(statistics["confidence"].iloc[0])
        table.caption = (
            f"mean [{confidence:.0%} CI, {MEAN_METHOD} over the row's runs; none from 1 run]; "
            "n/a: not measured (never 0)"
        )
    key = [f"{code}: {escape(kind)}" for kind, code in codes.items()]
    if key:
        key.insert(0, "quality: check k/n = k of n runs flagged; N = a number; -v: in full")
    return Group(table, *key)


def _quality_code(note: str, codes: dict[str, str]) -> str:
    """summary.csv's quality note ('check (k of n runs): <exp> cycle <c>: <r1>; <r2> | ...')
    as 'check k/n: q1 q2', a code per kind of reason (its text with numbers as N, without the
    level it names: a level is a row of its own)."""
    if not note.startswith("check ("):
        return note
    head, _, runs = note.partition("): ")
    found = []
    for run in runs.split(" | "):
        for reason in run.partition(": ")[2].split("; "):
            kind = re.sub(r"(?<![\w.])\d+(?:\.\d+)?", "N", re.sub(r"^level \S+: ", "", reason))
            code = codes.setdefault(kind, f"q{len(codes) + 1}")
            found += [code] if code not in found else []
    counted = head.removeprefix("check (").removesuffix(" runs").replace(" of ", "/")
    return f"check {counted}: {' '.join(found)}"


def _estimate(row: pd.Series) -> str:
    if pd.isna(row["mean"]):
        return "n/a"
    text = f"{row['mean']:.3g}"
    if not pd.isna(row["ci_low"]):
        text += f" [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"
    return text


def _cell(value: object) -> str:
    return "-" if value is None or value is pd.NA else str(value)
