"""Report figures for server levels (mode: server): energy per token and p99 latency against
the achieved request rate, one line per configuration, and the energy-vs-latency Pareto front
over every (configuration, level), from the per-level summary (summary.csv's shape, one group
per experiment and level); and a trace level's energy per request against its lengths, from its
requests-trace.parquet. Unmeasured energy is said, never drawn as zero."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from llenergymeasure.results.plots import (
    NO_ENERGY,
    NO_ENERGY_DETAIL,
    _say,
    draw_front,
    pareto_front,
)

RATE = "achieved_rate_rps"
LATENCY = "latency_p99_s"
ENERGIES = ("energy_adjusted_per_output_token_j", "energy_raw_per_output_token_j")
"""Adjusted where every level has it, else raw."""
LABELS = {
    RATE: "achieved rate (requests/s)",
    LATENCY: "p99 end-to-end latency (s)",
    ENERGIES[0]: "energy per output token (J, idle-adjusted)",
    ENERGIES[1]: "energy per output token (J, raw)",
}


def level_points(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, level): the means of rate, p99 latency and energy per token."""
    rows = summary[summary["metric"].isin([RATE, LATENCY, *ENERGIES])]
    wide = rows.pivot_table(
        index=["experiment_id", "level"], columns="metric", values="mean", aggfunc="first"
    )
    return wide.reindex(columns=[RATE, LATENCY, *ENERGIES]).astype(float).reset_index()


def energy_metric(points: pd.DataFrame) -> str | None:
    """The energy column to draw: adjusted if every point has it, raw if every point has that."""
    return next((m for m in ENERGIES if len(points) and points[m].notna().all()), None)


def load_figure(summary: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """Energy per token (left) and p99 latency (right) against the achieved rate."""
    points = level_points(summary)
    energy = energy_metric(points)
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, metric in ((left, energy), (right, LATENCY)):
        if metric is None:
            _say(ax, NO_ENERGY, NO_ENERGY_DETAIL)
            continue
        for experiment_id, levels in points.groupby("experiment_id", sort=False):
            line = levels.dropna(subset=[RATE, metric]).sort_values(RATE)
            ax.plot(line[RATE], line[metric], "-o", label=labels.get(str(experiment_id)))
            for _, row in line.iterrows():
                ax.annotate(
                    row["level"],
                    (row[RATE], row[metric]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xlabel(LABELS[RATE])
        ax.set_ylabel(LABELS[metric])
        ax.grid(alpha=0.3)
    handles, names = right.get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside right upper", fontsize=8)
    fig.suptitle("Server levels: energy per token and p99 latency vs achieved rate")
    return fig


def pareto_figure(summary: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """p99 latency against energy per token for every (configuration, level); the front (no
    other point is both cheaper and faster) is joined and highlighted."""
    points = level_points(summary)
    energy = energy_metric(points)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    ax.set_title("Energy per token vs p99 latency, every configuration and level")
    if energy is None:
        _say(ax, NO_ENERGY, NO_ENERGY_DETAIL)
        return fig
    points = points.dropna(subset=[energy, LATENCY]).reset_index(drop=True)
    xy = list(zip(points[energy], points[LATENCY], strict=True))
    ax.plot(points[energy], points[LATENCY], "o", color="tab:gray", label="configuration, level")
    front = pareto_front([(e, -lat) for e, lat in xy])  # lower energy, lower latency
    draw_front(ax, xy, front)
    for (x, y), (_, row) in zip(xy, points.iterrows(), strict=True):
        text = f"{labels.get(str(row['experiment_id']), row['experiment_id'])} {row['level']}"
        ax.annotate(text, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(LABELS[energy])
    ax.set_ylabel(LABELS[LATENCY])
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def trace_figure(requests: dict[str, pd.DataFrame]) -> Figure:
    """Each trace request's attributed energy against its prompt (left) and output (right)
    tokens, one colour per configuration; requests: label -> its requests-trace.parquet."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    measured = {k: f.dropna(subset=["energy_j"]) for k, f in requests.items()}
    for ax, tokens in zip(axes, ("prompt_tokens", "completion_tokens"), strict=True):
        if not any(len(f) for f in measured.values()):
            _say(ax, NO_ENERGY, NO_ENERGY_DETAIL)
            continue
        for label, frame in measured.items():
            ax.plot(frame[tokens], frame["energy_j"], "o", alpha=0.6, label=label)
        ax.set_xlabel(tokens.replace("_", " ") + " (the server's count)")
        ax.set_ylabel("energy per request (J, attributed)")
        ax.grid(alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside right upper", fontsize=8)
    fig.suptitle("Trace level: energy per request against its lengths")
    return fig
