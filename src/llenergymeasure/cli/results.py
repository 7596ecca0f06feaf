"""`lem results`, `lem compare` and `lem report`: what a campaign measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from llenergymeasure.cli import options as opts
from llenergymeasure.cli import running
from llenergymeasure.cli.options import app, out
from llenergymeasure.errors import ConfigError, printable
from llenergymeasure.redact import redact


@app.command()
def results(
    campaign_dir: opts.CampaignDir,
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
    json_out: opts.JsonOut = False,
) -> None:
    """Print the statistics across cycles: mean and CI per configuration (or group)."""
    from llenergymeasure.api import load_results
    from llenergymeasure.display import summary_table
    from llenergymeasure.results.collate import failed_levels, failed_levels_count

    keys = [k.strip() for k in group_by.split(",")] if group_by is not None else None
    loaded = load_results(campaign_dir, group_by=keys)
    manifest = loaded.manifest
    recorded = manifest.execution.settings
    levels = failed_levels(loaded.runs)
    if json_out:
        records = json.loads(loaded.summary.to_json(orient="records"))
        data = {
            "campaign_id": manifest.campaign_id,
            "campaign_dir": str(loaded.campaign_dir),
            "counts": manifest.counts(),
            "settings": redact(recorded.model_dump(mode="json")) if recorded else None,
            "failed": [running.failure(e) for e in loaded.failed],
            "failed_levels": levels,
            "summary": records,
        }
        out.print_json(json.dumps(data))
        return
    if not quiet:
        title = f"Campaign {manifest.campaign_id}"
        out.print(summary_table(title, loaded.summary, verbose=verbose))
    out.print(f"{manifest.counts_text()}{failed_levels_count(levels)}.")
    running.print_failed_levels(levels)
    if verbose:
        for entry in loaded.failed:
            error = escape(printable(entry.error or ""))
            out.print(f"[red]{entry.status}[/] {running.describe(entry)}: {error}", soft_wrap=True)
        if recorded is not None:
            running.print_settings(out, recorded.model_dump(mode="json"))


@app.command()
def compare(
    campaign_dir: opts.CampaignDir,
    experiments: Annotated[
        list[str] | None,
        typer.Argument(help="A B: compare experiment A with B (ids, unique prefixes or labels)."),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Without A B: compare every experiment with this one (id, unique prefix or "
            "label); default: the first of the campaign file's grid.",
        ),
    ] = None,
    json_out: opts.JsonOut = False,
) -> None:
    """Say which configuration uses less energy per output token, has more throughput and
    lower p99 latency, by how much: paired by cycle, t intervals on the log ratios,
    Holm-corrected p-values."""
    from llenergymeasure.api import load_results
    from llenergymeasure.results.compare import lines as compare_lines

    if experiments is not None and (len(experiments) != 2 or baseline is not None):
        raise ConfigError("lem compare takes two experiments (A B), or none and --baseline")
    found = load_results(campaign_dir).compare(*(experiments or []), baseline=baseline)
    if json_out:
        out.print_json(json.dumps(found.as_dict()))
        return
    for line in compare_lines(found):
        out.print(escape(line), soft_wrap=True, highlight=False)


@app.command()
def report(
    campaign_dir: opts.CampaignDir,
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
