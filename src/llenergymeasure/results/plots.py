"""Report figures (matplotlib, no display needed). Each function returns a Figure.

A metric nobody measured (energy on a CPU) is never drawn as zeros: its panel says
"no energy measured" instead. Inputs are the per-experiment summary (summary.csv grouped by
experiment), the per-run table (results.csv) and power time-series (timeseries.parquet).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

ENERGY = "energy_raw_per_output_token_j"
THROUGHPUT = "output_tokens_per_s"
LATENCY = "latency_p50_s"
AXIS_LABELS = {
    ENERGY: "energy per output token (J, raw)",
    THROUGHPUT: "throughput (output tokens/s)",
    LATENCY: "p50 request latency (s)",
}
NO_ENERGY = "no energy measured"
NO_ENERGY_DETAIL = "(energy needs an NVIDIA GPU with NVML;\nnull in the results, not zero)"


def metric_table(per_experiment: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of one metric, indexed by experiment id."""
    return per_experiment[per_experiment["metric"] == metric].set_index("experiment_id")


def measured(per_experiment: pd.DataFrame, metric: str) -> bool:
    rows = metric_table(per_experiment, metric)
    return bool(len(rows)) and int(rows["n"].max()) > 0


SHORT_NAMES = {
    "batch_size": "batch",
    "max_output_tokens": "out tok",
    "max_input_tokens": "in tok",
    "n_prompts": "prompts",
    "temperature": "T",
    "quantization": "quant",
    "attn_implementation": "attn",
}
MAX_FACETS = 4  # rows of panels per figure; more values than that go into the legend


def short_name(parameter: str) -> str:
    """`decoding.temperature` -> `T`, `pytorch.attn_implementation` -> `attn`:
    labels that fit a legend, every parameter named (never a bare `bf16`)."""
    last = parameter.rsplit(".", 1)[-1]
    return SHORT_NAMES.get(last, last)


def short_label(names: Sequence[str], values: Sequence[Any]) -> str:
    parts = []
    for name, value in zip(names, values, strict=True):
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            continue  # not a setting of this run (a greedy run's temperature)
        parts.append(f"{short_name(name)}={value}")
    return " ".join(parts) or "-"


def parameter_figure(per_experiment: pd.DataFrame, parameter: str, swept: Sequence[str]) -> Figure:
    """Energy per token, throughput and latency against one swept parameter (evenly spaced,
    one tick per swept value), with CI error bars. Of the other swept parameters, the one
    with the fewest values (2..MAX_FACETS) picks the row of panels and the rest pick the
    line; one legend, outside the axes. A metric's panels share their y scale; values that
    are not numbers (precision, attention) are points, never joined by lines. Runs without
    the parameter (a greedy run has no temperature) are left out of its figure."""
    others = [p for p in swept if p != parameter]
    rows_all = per_experiment[per_experiment[parameter].notna()]
    values = _ordered(rows_all[parameter].unique())
    counts = {p: rows_all[p].astype(str).nunique() for p in others}
    facets = [p for p in sorted(others, key=lambda p: counts[p]) if 2 <= counts[p] <= MAX_FACETS]
    facet = facets[0] if len(others) >= 2 and facets else None
    series_keys = [p for p in others if p != facet and counts[p] > 1]
    facet_values: list[Any] = [None]
    if facet is not None:
        unset = rows_all[facet].isna()
        facet_values = _ordered(rows_all.loc[~unset, facet].unique()) + (
            [None] if unset.any() else []
        )
    fig = Figure(figsize=(13, 0.6 + 3.1 * len(facet_values)), layout="constrained")
    axes = fig.subplots(len(facet_values), 3, squeeze=False, sharey="col")
    numeric = all(pd.api.types.is_number(v) and not pd.api.types.is_bool(v) for v in values)
    labelled: dict[str, Any] = {}
    colours: dict[str, str] = {}
    for row_axes, facet_value in zip(axes, facet_values, strict=True):
        if facet is None:
            in_facet = rows_all
        elif facet_value is None:
            in_facet = rows_all[rows_all[facet].isna()]
        else:
            in_facet = rows_all[rows_all[facet] == facet_value]
        for ax, metric in zip(row_axes, (ENERGY, THROUGHPUT, LATENCY), strict=True):
            title = AXIS_LABELS[metric]
            if facet is not None:
                title += f"\n{short_name(facet)}: {'unset' if facet_value is None else facet_value}"
            ax.set_title(title, fontsize=9)
            if metric == ENERGY and not measured(per_experiment, ENERGY):
                _say(ax, NO_ENERGY, NO_ENERGY_DETAIL)
                continue
            rows = in_facet[in_facet["metric"] == metric]
            groups = (
                rows.groupby(series_keys, dropna=False, sort=True) if series_keys else [((), rows)]
            )
            for index, (key, group) in enumerate(groups):
                points = group[group["n"] > 0]
                if points.empty:
                    continue
                points = points.assign(_x=points[parameter].map(values.index)).sort_values("_x")
                keys = key if isinstance(key, tuple) else (key,)
                label = short_label(series_keys, keys) if series_keys else "mean"
                shift = (index % 5 - 2) * 0.04 if series_keys else 0.0  # keep bars apart
                container = ax.errorbar(
                    points["_x"] + shift,
                    points["mean"].astype(float),
                    yerr=_error_bars(points),
                    marker="o",
                    linestyle="-" if numeric else "none",
                    capsize=3,
                    color=colours.setdefault(label, f"C{len(colours) % 10}"),
                    label=label,
                )
                labelled.setdefault(label, container)
            ax.set_xticks(range(len(values)), [str(v) for v in values])
            ax.set_xlim(-0.5, len(values) - 0.5)
            ax.set_xlabel(short_name(parameter), fontsize=9)
            ax.grid(alpha=0.3)
    if series_keys and labelled:
        fig.legend(
            list(labelled.values()),
            list(labelled),
            loc="outside right upper",
            fontsize=8,
            title=", ".join(short_name(k) for k in series_keys),
        )
    fig.suptitle(f"Metrics vs {parameter} (mean and CI across runs)")
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower energy (first) and higher
    throughput (second), ordered by energy."""
    front = []
    for i, (energy, throughput) in enumerate(points):
        dominated = any(
            (e <= energy and t >= throughput) and (e < energy or t > throughput)
            for j, (e, t) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_figure(per_experiment: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """Throughput against energy per token, one point per experiment; the Pareto front (no
    other configuration is both cheaper and faster) is joined and highlighted."""
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    ax.set_title("Throughput vs energy per token (Pareto front marked)")
    if not measured(per_experiment, ENERGY):
        _say(ax, NO_ENERGY, NO_ENERGY_DETAIL)
        return fig
    energy = metric_table(per_experiment, ENERGY)
    throughput = metric_table(per_experiment, THROUGHPUT)
    ids = [i for i in energy.index if energy.loc[i, "n"] > 0 and throughput.loc[i, "n"] > 0]
    points = [(float(energy.loc[i, "mean"]), float(throughput.loc[i, "mean"])) for i in ids]
    ax.errorbar(
        [p[0] for p in points],
        [p[1] for p in points],
        xerr=_error_bars(energy.loc[ids]),
        yerr=_error_bars(throughput.loc[ids]),
        fmt="o",
        color="tab:gray",
        capsize=3,
        label="configuration",
    )
    draw_front(ax, points, pareto_front(points))
    for experiment_id, (x, y) in zip(ids, points, strict=True):
        ax.annotate(
            labels.get(experiment_id, experiment_id),
            (x, y),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel(AXIS_LABELS[ENERGY])
    ax.set_ylabel(AXIS_LABELS[THROUGHPUT])
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def timeseries_figure(series: dict[str, pd.DataFrame]) -> Figure:
    """GPU power over each chosen run (one line per GPU): warm-up faint, the measured window
    solid. t_s counts from the window's start, so warm-up is at negative times."""
    rows = max(1, len(series))
    fig = Figure(figsize=(10, 2.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    fig.suptitle("GPU power during warm-up and the measured window")
    if not series:
        _say(axes[0], "no power time-series recorded", "(timeseries.parquet comes with NVML)")
        return fig
    for ax, (label, frame) in zip(axes, series.items(), strict=True):
        gpus = sorted(frame["gpu_index"].unique()) if "gpu_index" in frame else [None]
        for number, gpu in enumerate(gpus):
            samples = frame if gpu is None else frame[frame["gpu_index"] == gpu]
            name = f"GPU {gpu} " if len(gpus) > 1 else ""
            colour = f"C{number}"
            for phase, style in (
                ("warmup", {"color": colour, "alpha": 0.35}),
                ("measured", {"color": colour}),
            ):
                part = samples[samples["phase"] == phase]
                if not part.empty:
                    ax.plot(part["t_s"], part["power_w"], label=f"{name}{phase}", **style)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("power (W)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[-1].set_xlabel("seconds from the start of the measured window")
    return fig


def cycle_spread_figure(runs: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """How much the cycles of each experiment disagree: every run's value as a percentage
    off its experiment's mean (one row per experiment, labelled with its mean), so spreads
    of fast and slow configurations read on one axis."""
    done = runs[runs["status"] == "done"]
    ids = list(dict.fromkeys(done["experiment_id"]))
    fig = Figure(figsize=(12, 2.2 + 0.3 * len(ids)), layout="constrained")
    axes = fig.subplots(1, 2)
    columns = {
        THROUGHPUT: ("output_tokens_per_s", "tokens/s"),
        ENERGY: ("energy.energy_raw_per_output_token_j", "J/token"),
    }
    cycles = sorted(done["cycle"].unique())
    for ax, (metric, (column, unit)) in zip(axes, columns.items(), strict=True):
        ax.set_title(AXIS_LABELS[metric] + ", per run", fontsize=10)
        values = pd.to_numeric(done.get(column, pd.Series(dtype=float)), errors="coerce")
        if metric == ENERGY and values.isna().all():
            _say(ax, NO_ENERGY, NO_ENERGY_DETAIL)
            continue
        means = {i: values[done["experiment_id"] == i].mean() for i in ids}
        off = pd.Series(
            [
                (v / means[i] - 1) * 100 if means[i] else math.nan
                for v, i in zip(values, done["experiment_id"], strict=True)
            ],
            index=done.index,
        )
        for cycle in cycles:
            in_cycle = done["cycle"] == cycle
            ys = [ids.index(i) for i in done.loc[in_cycle, "experiment_id"]]
            ax.scatter(off[in_cycle], ys, label=f"cycle {cycle}", s=28, alpha=0.85)
        ax.axvline(0, color="black", linewidth=0.8)
        ticks = [
            f"{labels.get(i, i)}  ({means[i]:.3g} {unit})" if not math.isnan(means[i]) else i
            for i in ids
        ]
        ax.set_yticks(range(len(ids)), ticks, fontsize=8)
        ax.set_ylim(len(ids) - 0.5, -0.5)
        ax.set_xlabel("% off the experiment's mean", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    handles, names = next(
        (ax.get_legend_handles_labels() for ax in axes if ax.collections), ([], [])
    )
    if handles:
        fig.legend(handles, names, loc="outside right upper", fontsize=8)
    fig.suptitle("Per-cycle spread: each run against its experiment's mean")
    return fig


def draw_front(ax: Axes, points: Sequence[tuple[float, float]], front: Sequence[int]) -> None:
    """The Pareto front through the given points, drawn alike in every report figure."""
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        "-o",
        color="tab:red",
        markersize=9,
        zorder=3,
        label="Pareto front",
    )


def _say(ax: Axes, text: str, detail: str = "") -> None:
    ax.text(0.5, 0.55, text, ha="center", va="center", fontsize=14, transform=ax.transAxes)
    if detail:
        ax.text(
            0.5,
            0.35,
            detail,
            ha="center",
            va="center",
            fontsize=9,
            color="0.4",
            transform=ax.transAxes,
        )
    ax.set_xticks([])
    ax.set_yticks([])


def _error_bars(rows: pd.DataFrame) -> np.ndarray:
    """Asymmetric CI error bars; 0 where there is no CI (a single run)."""
    mean = rows["mean"].astype(float).to_numpy()
    low = rows["ci_low"].astype(float).fillna(rows["mean"].astype(float)).to_numpy()
    high = rows["ci_high"].astype(float).fillna(rows["mean"].astype(float)).to_numpy()
    return np.vstack([mean - low, high - mean])


def _ordered(values: Any) -> list[Any]:
    items = list(values)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=str)


RATIO_TICKS = [0.01, 0.1, 0.2, 0.33, 0.5, 0.67, 0.8, 0.9, 0.95, 0.98, 1, 1.02, 1.05, 1.1]
RATIO_TICKS += [1.25, 1.5, 2, 3, 5, 10, 100]
FOREST_DIRECTION = {
    "energy_per_output_token": "energy per output token",
    "output_tokens_per_s": "throughput",
    "latency_p99_s": "p99 latency",
}


def forest_figure(found: Any, labels: dict[str, str]) -> Figure:
    """Each configuration's ratio to the baseline with its paired interval, one panel per
    measured metric (results/compare.py's Comparisons; unmeasured ones are left out and
    named below), on a log axis centred on 1, labels in full (wrapped)."""
    rows = found.rows if found is not None else []
    metrics = list(dict.fromkeys(c.metric for c in rows))
    names = list(dict.fromkeys(c.experiment_id for c in rows))
    wrapped = {i: textwrap.fill(labels.get(i, i), 34) for i in names}
    height = sum(wrapped[i].count("\n") + 1 for i in names) * 0.28
    fig = Figure(figsize=(4 + 3.6 * max(1, len(metrics)), max(3.5, 2.2 + height)))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False, sharey=True)[0]
    if not rows:
        _say(axes[0], "Nothing to compare", "needs two experiments with done runs")
        return fig
    ys = {i: len(names) - 1 - k for k, i in enumerate(names)}
    for ax, metric in zip(axes, metrics, strict=True):
        shown = [c for c in rows if c.metric == metric]
        ends = [v for c in shown for v in (c.ratio, c.ci_low, c.ci_high) if v is not None]
        for c in shown:
            low, high = c.ci_low or c.ratio, c.ci_high or c.ratio
            ax.errorbar(
                c.ratio,
                ys[c.experiment_id],
                xerr=[[c.ratio - low], [high - c.ratio]],
                fmt="o",
                color="C3" if c.significant else "C0",
                capsize=3,
            )
        reach = 1.15 * max(abs(math.log(v)) for v in ends) or 0.05
        ax.set_xscale("log")
        ax.set_xlim(math.exp(-reach), math.exp(reach))
        ticks = _ratio_ticks(reach)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"{FOREST_DIRECTION[metric]}\n< 1: less than the baseline", fontsize=9)
        ax.grid(alpha=0.3, axis="x", which="both")
    axes[0].set_yticks(list(ys.values()), list(wrapped.values()), fontsize=8)
    base = labels.get(found.baseline_id, found.baseline_id)
    notes = "".join(f"; {n}" for n in found.notes)
    title = (
        f"Ratio to the baseline {base} (log axis; < 1: less than the baseline), paired by "
        f"cycle: {found.confidence:.0%} intervals, t on log ratios; red: Holm-corrected "
        f"p < {1 - found.confidence:.2f}{notes}"
    )
    # matplotlib's wrap=True wraps at the figure's edge only after centring, which cut the
    # title on both sides: wrap to the figure's width (about 13 characters an inch at 9 pt).
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 13)), fontsize=9)
    return fig


def _ratio_ticks(reach: float) -> list[float]:
    """Ticks for a log ratio axis spanning exp(-reach)..exp(reach): the round ratios where the
    span is narrow, whole decades where it is wide (an interval from 2 cycles can span 1e6)."""
    decades = int(reach / math.log(10))
    if decades >= 2:
        step = max(1, decades // 3)
        return [10.0**k for k in range(-decades, decades + 1, step)]
    return [t for t in RATIO_TICKS if t == 1 or reach / 5 <= abs(math.log(t)) <= reach]
