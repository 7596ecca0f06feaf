"""`lem report`: a self-contained report.html (plots embedded, no network needed to view it)
plus the same plots as PNG files, for one campaign directory."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from matplotlib.figure import Figure

from llenergymeasure.config.server import TRACE_LEVEL
from llenergymeasure.contract import TIMESERIES_FILE
from llenergymeasure.errors import ConfigError
from llenergymeasure.results import compare, plots, serving_plots
from llenergymeasure.results.aggregate import (
    CONFIG_PREFIX,
    LEVEL,
    QUALITY,
    summarize,
    swept_parameters,
)
from llenergymeasure.results.collate import (
    QUALITY_REASONS,
    QUALITY_STATUS,
    failed_levels,
    failed_levels_count,
)
from llenergymeasure.stats import MEAN_METHOD, RATIO_METHOD
from llenergymeasure.version import __version__

if TYPE_CHECKING:
    from llenergymeasure.config.campaign import StatisticsConfig
    from llenergymeasure.results.views import EntryView, LoadedCampaign

REPORT_DIR = "report"
REPORT_FILE = "report.html"
TIMESERIES_COLUMNS = ("t_s", "phase", "power_w")
DEFAULT_TIMESERIES = 6
FAILED = ("failed", "oom", "interrupted")


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    figure: Figure


def write_report(
    loaded: LoadedCampaign, out_dir: Path | None = None, timeseries: list[str] | None = None
) -> Path:
    """Write report.html and one PNG per plot into out_dir (default: <campaign>/report);
    timeseries picks the experiments whose power time-series are drawn (ids or unique id
    prefixes; default: the first few that have one). Returns the report.html path."""
    out = out_dir or loaded.campaign_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    statistics = loaded.manifest.execution.statistics
    runs = without_unused_settings(loaded.runs)
    labels = _labels(runs, loaded.manifest.entries)
    # server levels get their own figures; the offline figures read one row per run
    at_level = runs[LEVEL].notna() if LEVEL in runs else pd.Series(False, index=runs.index)
    level_runs, runs = runs[at_level], runs[~at_level]
    per_experiment = summarize(runs, statistics.model_copy(update={"group_by": None}))
    swept = swept_parameters(runs)
    series, notes = _timeseries(loaded, labels, timeseries)

    figures = [
        Plot(
            f"metrics_vs_{_slug(p)}",
            f"Energy per token, throughput and latency vs {p}",
            plots.parameter_figure(per_experiment, p, swept),
        )
        for p in swept
    ]
    offline = len(runs) > 0 or len(level_runs) == 0
    if offline:
        figures.append(
            Plot(
                "pareto",
                "Throughput vs energy per token",
                plots.pareto_figure(per_experiment, labels),
            )
        )
    figures.append(Plot("power_timeseries", "Power time-series", plots.timeseries_figure(series)))
    if offline:
        figures += [
            Plot("cycle_spread", "Per-cycle spread", plots.cycle_spread_figure(runs, labels)),
            _forest(loaded, labels),
        ]
    if len(level_runs):
        figures += _server_figures(level_runs, statistics, labels)
    if traced := _trace_requests(loaded, labels):
        figures.append(Plot("server_trace", "Trace level", serving_plots.trace_figure(traced)))
    images: list[tuple[Plot, str]] = []
    for plot in figures:
        buffer = io.BytesIO()
        plot.figure.savefig(buffer, format="png", dpi=110)
        png = buffer.getvalue()
        (out / f"{plot.name}.png").write_bytes(png)
        images.append((plot, base64.b64encode(png).decode("ascii")))

    page = _page(loaded, per_experiment, swept, images, notes, labels)
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


SAMPLING_ONLY = ("temperature", "top_p", "top_k")


def without_unused_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-run table with the sampling settings of greedy runs blanked: a greedy run has
    no temperature, so it is never drawn (or labelled) at the default 1.0."""
    strategy = runs.get(CONFIG_PREFIX + "decoding.strategy")
    if strategy is None:
        return runs
    runs = runs.copy()
    greedy = strategy == "greedy"
    for name in SAMPLING_ONLY:
        column = f"{CONFIG_PREFIX}decoding.{name}"
        if column in runs:
            runs[column] = runs[column].astype(object).where(~greedy, None)
    return runs


def _server_figures(
    level_runs: pd.DataFrame, statistics: StatisticsConfig, labels: dict[str, str]
) -> list[Plot]:
    per_level = summarize(level_runs, statistics.model_copy(update={"group_by": None}))
    return [
        Plot(
            "server_load",
            "Server levels: energy per token and p99 latency vs achieved rate",
            serving_plots.load_figure(per_level, labels),
        ),
        Plot(
            "server_pareto",
            "Server levels: energy per token vs p99 latency (Pareto front)",
            serving_plots.pareto_figure(per_level, labels),
        ),
    ]


def _forest(loaded: LoadedCampaign, labels: dict[str, str]) -> Plot:
    """Every configuration against the first of the grid (`lem compare` for others)."""
    done = loaded.runs[loaded.runs["status"] == "done"] if len(loaded.runs) else loaded.runs
    confidence = loaded.manifest.execution.statistics.confidence
    found = (
        compare.compare(loaded.runs, loaded.experiment_order, labels=labels, confidence=confidence)
        if len(done) and done["experiment_id"].nunique() > 1
        else None
    )
    return Plot(
        "compare_forest",
        "Ratios against the first configuration of the grid",
        plots.forest_figure(found, labels),
    )


def _labels(runs: pd.DataFrame, entries: Sequence[EntryView]) -> dict[str, str]:
    """experiment id -> its configuration: the values that differ between experiments, each
    named ('batch_size=8 precision=bf16'); a failed one's from its manifest label; else the id."""
    firsts = runs[runs["status"] == "done"].drop_duplicates("experiment_id")
    swept = [
        str(c)
        for c in firsts.columns
        if str(c).startswith(CONFIG_PREFIX) and firsts[c].astype(str).nunique() > 1
    ]
    names = [c.removeprefix(CONFIG_PREFIX) for c in swept]
    labels = {}
    for _, row in firsts.iterrows():
        labels[str(row["experiment_id"])] = plots.short_label(names, [row[c] for c in swept])
    for entry in entries:
        labels.setdefault(
            entry.experiment_id, plots.short_label(list(entry.label), list(entry.label.values()))
        )
    return {i: i if text == "-" else text for i, text in labels.items()}


def _timeseries(
    loaded: LoadedCampaign, labels: dict[str, str], chosen: list[str] | None
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Power time-series to draw (label -> frame) and notes on what was not drawn. Per
    experiment, its first done run that has a timeseries.parquet."""
    ids = list(dict.fromkeys(e.experiment_id for e in loaded.manifest.entries))
    wanted = [_resolve(prefix, ids) for prefix in chosen] if chosen is not None else ids
    notes: list[str] = []
    found: dict[str, tuple[str, pd.DataFrame]] = {}
    for entry in loaded.manifest.entries:
        if entry.experiment_id not in wanted or entry.experiment_id in found:
            continue
        path = loaded.campaign_dir / Path(entry.exp_path).parent / TIMESERIES_FILE
        if entry.status != "done" or not path.is_file():
            continue
        frame = pd.read_parquet(path)
        missing = [c for c in TIMESERIES_COLUMNS if c not in frame.columns]
        if missing:
            notes.append(f"{path} lacks column(s) {', '.join(missing)}; not drawn")
            continue
        label = f"{labels.get(entry.experiment_id, entry.experiment_id)} (cycle {entry.cycle})"
        found[entry.experiment_id] = (label, frame)
    if chosen is not None:
        notes += [f"experiment {i} has no power time-series" for i in wanted if i not in found]
        drawn = [i for i in wanted if i in found]
    else:
        drawn = [i for i in ids if i in found][:DEFAULT_TIMESERIES]
        if len(found) > len(drawn):
            notes.append(
                f"power time-series drawn for {len(drawn)} of {len(found)} experiments; "
                "choose others with `lem report --timeseries EXPERIMENT_ID`"
            )
    return dict(found[i] for i in drawn), notes


def _trace_requests(loaded: LoadedCampaign, labels: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Per experiment, its first done run's trace requests (requests-trace.parquet)."""
    found: dict[str, pd.DataFrame] = {}
    for entry in loaded.manifest.entries:
        path = loaded.campaign_dir / Path(entry.exp_path).parent / f"requests-{TRACE_LEVEL}.parquet"
        if entry.status == "done" and entry.experiment_id not in found and path.is_file():
            found[labels.get(entry.experiment_id, entry.experiment_id)] = pd.read_parquet(path)
    return found


def _resolve(prefix: str, ids: list[str]) -> str:
    matches = [i for i in ids if i.startswith(prefix)]
    if len(matches) != 1:
        what = "no experiment" if not matches else f"{len(matches)} experiments"
        raise ConfigError(f"--timeseries {prefix!r} matches {what}; experiments: {', '.join(ids)}")
    return matches[0]


def _page(
    loaded: LoadedCampaign,
    per_experiment: pd.DataFrame,
    swept: list[str],
    images: list[tuple[Plot, str]],
    notes: list[str],
    labels: dict[str, str],
) -> str:
    manifest = loaded.manifest
    execution = manifest.execution
    gaps = execution.gaps
    seed = f" (order_seed {execution.order_seed})" if execution.order_seed is not None else ""
    floor = (
        f"{execution.thermal_floor_c:g} °C (wait up to {execution.thermal_floor_max_wait_s:g} s)"
        if execution.thermal_floor_c is not None
        else "none"
    )
    devices = sorted({str(r.environment.device) for r in loaded.results}) or ["-"]
    facts = [
        ("campaign", manifest.campaign_id),
        ("created", manifest.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("runs", manifest.counts_text() + failed_levels_count(failed_levels(loaded.runs))),
        ("cycles", str(manifest.total_cycles)),
        ("order", f"{execution.order}{seed}"),
        (
            "gaps",
            f"{gaps.between_experiments_s:g} s between experiments, "
            f"{gaps.between_cycles_s:g} s between cycles",
        ),
        ("thermal floor", floor),
        ("swept parameters", ", ".join(swept) or "none"),
        ("device", ", ".join(devices)),
        (
            "statistics",
            f"mean and {execution.statistics.confidence:.0%} CI ({MEAN_METHOD}, over the n "
            f"runs of each row); comparisons: paired by cycle, {RATIO_METHOD}, Holm-corrected",
        ),
    ]
    warnings = _warnings(loaded, per_experiment) + notes
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>LLenergyMeasure report: {_e(manifest.campaign_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>LLenergyMeasure report: {_e(manifest.campaign_id)}</h1>",
        "<table class='facts'>",
        *(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts),
        "</table>",
    ]
    if warnings:
        parts += ["<h2>Read this first</h2>", "<ul class='warnings'>"]
        parts += [f"<li>{_e(w)}</li>" for w in warnings]
        parts.append("</ul>")
    runs = loaded.runs
    failed = runs[runs["status"].isin(FAILED)] if len(runs) else runs
    if len(failed):  # no result.json: their configuration comes from the manifest
        label_of = {e.experiment_id: e.label for e in manifest.entries}
        configs = [
            {CONFIG_PREFIX + k: v for k, v in label_of.get(str(i), {}).items()}
            for i in failed["experiment_id"]
        ]
        failed = failed.drop(columns=[c for c in failed if str(c).startswith(CONFIG_PREFIX)])
        failed = pd.concat([failed, pd.DataFrame(configs, index=failed.index)], axis=1)
    if len(failed):
        parts += ["<h2 class='failed'>Failed runs and levels: not in the figures</h2>", "<ul>"]
        parts += [
            f"<li class='failed'>{_e(_run_name(r, labels))}: {r['status']}: "
            f"{_e(_text(r['error']))}</li>"
            for _, r in failed.iterrows()
        ]
        parts.append("</ul>")
    group_by = execution.statistics.group_by
    parts.append(
        f"<h2>Summary{' by ' + _e(', '.join(group_by)) if group_by else ' per experiment'}</h2>"
    )
    parts.append(_table(loaded.summary, failed))
    parts += ["<h2>Quality of each measurement</h2>", _quality_table(runs, labels)]
    # every figure is marked with what it leaves out, not only the list at the top
    left_out = [_run_name(r, labels) for _, r in failed.iterrows()] if len(failed) else []
    for plot, data in images:
        parts += [
            f"<h2>{_e(plot.title)}</h2>",
            f"<img alt='{_e(plot.title)}' src='data:image/png;base64,{data}'>",
        ]
        if left_out and plot.name != "power_timeseries":
            parts.append(f"<p class='failed'>Failed, not drawn: {_e('; '.join(left_out))}</p>")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts += [f"<footer>llenergymeasure {_e(__version__)}, {stamp}</footer>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _warnings(loaded: LoadedCampaign, per_experiment: pd.DataFrame) -> list[str]:
    out = []
    if not plots.measured(per_experiment, plots.ENERGY):
        out.append(
            "No energy was measured in this campaign (no NVIDIA GPU/NVML): every energy figure "
            "is null and energy plots say so; throughput and latency are real."
        )
    unconverged = [r for r in loaded.results if r.offline and r.offline.warmup.converged is False]
    if unconverged:
        out.append(
            f"{len(unconverged)} run(s) stopped warming up at max_runs without the latency CV "
            "settling under until_cv: their measured windows may include warm-up effects."
        )
    throttled = [r for r in loaded.results if r.flags.throttled]
    if throttled:
        out.append(
            f"{len(throttled)} run(s) had GPU clocks slowed during the measured window "
            "(flags.throttled; thermal or power): their energy and speed are not steady-state."
        )
    host_bound = [r for r in loaded.results if r.quality is not None and r.quality.host_bound]
    if host_bound:
        out.append(
            f"{len(host_bound)} run(s) were host-bound (quality.host_bound: a GPU kernel ran in "
            "under half of the window): their throughput follows the host CPU's pace."
        )
    return out + sorted({w for e in loaded.manifest.entries for w in e.warnings})


def _table(summary: pd.DataFrame, failed: pd.DataFrame) -> str:
    """summary.csv as HTML: one row per group, mean [CI] per measured metric (those measured
    in no run are named below it, not given columns), its quality status and failed runs;
    an experiment (or level) with no finished run is a row marked failed."""
    if summary.empty and failed.empty:
        return "<p>No finished runs yet.</p>"
    labels = [str(c) for c in summary.columns[: list(summary.columns).index("n_experiments")]]
    means = summary.groupby("metric", sort=False)["mean"]
    metrics = [str(m) for m, values in means if values.notna().any()]
    unmeasured = [str(m) for m, values in means if values.isna().all()]
    head = "".join(f"<th>{_e(c)}</th>" for c in [*labels, "runs", *metrics, QUALITY])
    rows = []
    for _, group in summary.groupby(labels, dropna=False, sort=False):
        by_metric = {row["metric"]: row for _, row in group.iterrows()}
        first = group.iloc[0]
        cells = [_e(_text(first[c])) for c in labels]
        lost = _matching(failed, first, labels)
        cells.append(
            f"{by_metric['output_tokens_per_s']['n']}"
            + (f" <span class='failed'>+{lost} failed</span>" if lost else "")
        )
        for metric in metrics:
            row = by_metric[metric]
            if pd.isna(row["mean"]):
                cells.append("<span class='na'>not measured</span>")
                continue
            ci = (
                f"<br><small>[{row['ci_low']:.4g}, {row['ci_high']:.4g}]</small>"
                if not pd.isna(row["ci_low"])
                else ""
            )
            cells.append(f"{row['mean']:.4g}{ci}")
        note = str(first[QUALITY]).split(":")[0]
        cells.append(f"<span class='{note.split()[0]}'>{_e(note)}</span>")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    shown = {tuple(_text(v) for v in k) for k in summary[labels].itertuples(index=False)}
    for _, run in failed.iterrows():  # nothing finished: a row of its own, marked
        values = [_text(run.get(CONFIG_PREFIX + c, run.get(c))) for c in labels]
        if tuple(values) not in shown:
            shown.add(tuple(values))
            rows.append(
                "<tr class='failed'>"
                + "".join(f"<td>{_e(v)}</td>" for v in values)
                + f"<td colspan='{len(metrics) + 2}'>failed: no finished run</td></tr>"
            )
    table = f"<table class='summary'><tr>{head}</tr>{''.join(rows)}</table>"
    if unmeasured:
        table += f"<p class='na'>Not measured in any run: {_e(', '.join(unmeasured))}.</p>"
    return table


def _matching(failed: pd.DataFrame, group: pd.Series, labels: list[str]) -> int:
    """How many failed runs (or levels) belong to a summary group."""
    keys = [c for c in labels if c in ("experiment_id", LEVEL)] or labels
    hit = pd.Series(True, index=failed.index)
    for c in keys:
        column = failed.get(CONFIG_PREFIX + c, failed.get(c))
        if column is None:
            return 0
        hit &= column.map(_text) == _text(group[c])
    return int(hit.sum())


QUALITY_NUMBERS = {
    "quality.window_s": "window s",
    "quality.min_window_s": "min window s",
    "quality.window_to_warmup_latency_ratio": "window / warm-up latency",
    "quality.edge_uncertainty_pct": "edge uncertainty %",
    "quality.sampler_coverage": "sampler coverage",
    "quality.sampler_largest_gap_s": "largest sampler gap s",
    "quality.throttled_share": "throttled share",
    "quality.baseline_age_s": "baseline age s",
    "quality.gpu_busy_share": "GPU busy share",
    "quality.host_cpu_s": "worker CPU s",
    "quality.host_steal_s": "host steal s",
}
"""The numbers a run's quality checks read (measure/quality.py holds the thresholds)."""


def _quality_table(runs: pd.DataFrame, labels: dict[str, str]) -> str:
    """Every run (each level of a server run): its quality status and reasons beside the
    numbers they rest on (a column only where some run has the number); failed ones marked."""
    if runs.empty:
        return "<p>No runs yet.</p>"
    numbers = [c for c in QUALITY_NUMBERS if c in runs and runs[c].notna().any()]
    head = ["configuration", "cycle", "status", "reasons", *map(QUALITY_NUMBERS.get, numbers)]
    order = {i: n for n, i in enumerate(dict.fromkeys(runs["experiment_id"]))}
    rows = []
    for _, run in runs.sort_values(
        "experiment_id", key=lambda c: c.map(order), kind="stable"
    ).iterrows():
        done = run["status"] == "done"
        status = _text(run.get(QUALITY_STATUS)) if done else str(run["status"])
        reasons = _text(run.get(QUALITY_REASONS) or "") if done else _text(run["error"])
        cells = [
            _e(_run_name(run, labels, cycle=False)),
            str(run["cycle"]),
            f"<span class='{_e(status)}'>{_e(status)}</span>",
            _e(reasons),
        ]
        cells += [_number(run[c]) for c in numbers]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heading = "".join(f"<th>{_e(str(h))}</th>" for h in head)
    return (
        "<p>ok: every check passed; check: the reasons say which did not, and why (thresholds "
        "in measure/quality.py); a flagged run stays in the statistics.</p>"
        f"<table class='quality'><tr>{heading}</tr>{''.join(rows)}</table>"
    )


def _run_name(run: pd.Series, labels: dict[str, str], cycle: bool = True) -> str:
    name = labels.get(str(run["experiment_id"]), str(run["experiment_id"]))
    level = run.get(LEVEL)
    name += f" level {level}" if isinstance(level, str) else ""
    return name + (f" cycle {run['cycle']}" if cycle else "")


def _number(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.3g}"


def _text(value: object) -> str:
    return "-" if value is None or value is pd.NA else str(value)


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
table.summary td { text-align: right; }
.facts th { background: #f4f4f4; }
.warnings li { color: #8a4b00; margin: 0.3em 0; }
.na { color: #999; }
.failed, .oom, .interrupted { color: #b00020; font-weight: 600; }
.check { color: #8a4b00; font-weight: 600; }
table.quality td { font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eee; }
footer { margin-top: 3em; color: #888; font-size: 0.8em; }
"""
