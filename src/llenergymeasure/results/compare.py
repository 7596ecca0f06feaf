"""Paired comparisons between configurations of one campaign: ratios with bootstrap CIs.

Runs of two experiments in the same cycle share their conditions (interleaved or shuffled
cycles: the same hour, temperature, neighbours), so a configuration is compared with the
baseline cycle by cycle: the bootstrap resamples whole cycles and keeps each pair together.
The ratio is mean(config) / mean(baseline) over the paired cycles. Holm's step-down method
corrects the p-values for the number of comparisons; the intervals themselves are per
comparison at the stated confidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from llenergymeasure.errors import ConfigError

COMPARED: dict[str, str] = {
    "energy_per_output_token": "energy.energy_adjusted_per_output_token_j",
    "output_tokens_per_s": "output_tokens_per_s",
    "latency_p99_s": "latency.p99_s",
}
"""Compared metric -> column of the per-run table. Energy falls back to raw when the
baseline-adjusted figure is missing for either side (then `energy_basis` says raw)."""
RAW_ENERGY = "energy.energy_raw_per_output_token_j"
CORRECTION = "Holm (step-down) over all comparisons of a metric; intervals are per comparison"


@dataclass(frozen=True)
class Comparison:
    metric: str
    experiment_id: str
    baseline_id: str
    n_pairs: int
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_holm: float | None
    significant: bool | None
    basis: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_ratio_ci(
    a: np.ndarray, b: np.ndarray, *, resamples: int, confidence: float, seed: int
) -> tuple[float, float, float, float] | None:
    """(ratio, ci_low, ci_high, two-sided bootstrap p for ratio == 1) of mean(a)/mean(b),
    resampling pair indices; None below two pairs."""
    n = len(a)
    if n < 2 or len(b) != n:
        return None
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(resamples, n))
    ratios = a[index].mean(axis=1) / b[index].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    p = min(1.0, 2.0 * min(float(np.mean(ratios <= 1.0)), float(np.mean(ratios >= 1.0))))
    return float(a.mean() / b.mean()), float(low), float(high), p


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (monotone step-down), None kept where there was no test."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(known)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def compare(
    runs: pd.DataFrame,
    baseline: str | None = None,
    *,
    labels: dict[str, str] | None = None,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[Comparison]:
    """Every experiment against `baseline` (an experiment id, its unique prefix, or a label),
    or every pair when baseline is None."""
    done = runs[runs["status"] == "done"] if len(runs) else runs
    ids = list(dict.fromkeys(str(i) for i in done["experiment_id"])) if len(done) else []
    if len(ids) < 2:
        raise ConfigError("compare needs at least two experiments with done runs")
    if baseline is None:
        pairs = list(combinations(ids, 2))
        pairs = [(b, a) for a, b in pairs]  # later one against earlier one
    else:
        base = resolve(baseline, ids, labels or {})
        pairs = [(e, base) for e in ids if e != base]
    out: list[Comparison] = []
    for k, (metric, column) in enumerate(COMPARED.items()):
        rows = [_one(done, metric, column, e, b, resamples, confidence, seed + k) for e, b in pairs]
        adjusted = holm([r.p_value for r in rows])
        alpha = 1.0 - confidence
        out.extend(
            Comparison(
                **{
                    **r.as_dict(),
                    "p_holm": p,
                    "significant": None if p is None else p < alpha,
                }
            )
            for r, p in zip(rows, adjusted, strict=True)
        )
    return out


def resolve(key: str, ids: list[str], labels: dict[str, str]) -> str:
    """An experiment id from an id, a unique id prefix or an exact label."""
    by_label = [i for i in ids if labels.get(i) == key]
    matches = by_label or [i for i in ids if i.startswith(key)]
    if len(matches) != 1:
        known = ", ".join(f"{i} ({labels[i]})" if i in labels else i for i in ids)
        what = "matches no" if not matches else "matches more than one"
        raise ConfigError(f"--baseline {key!r} {what} experiment with done runs; known: {known}")
    return matches[0]


def _one(
    done: pd.DataFrame,
    metric: str,
    column: str,
    experiment: str,
    base: str,
    resamples: int,
    confidence: float,
    seed: int,
) -> Comparison:
    basis = "adjusted" if metric == "energy_per_output_token" else "-"
    a, b = _paired(done, column, experiment, base)
    if metric == "energy_per_output_token" and len(a) < 2:
        a, b = _paired(done, RAW_ENERGY, experiment, base)
        basis = "raw"
    found = paired_ratio_ci(a, b, resamples=resamples, confidence=confidence, seed=seed)
    ratio, low, high, p = found if found else (None, None, None, None)
    return Comparison(metric, experiment, base, len(a), ratio, low, high, p, None, None, basis)


def _paired(
    done: pd.DataFrame, column: str, experiment: str, base: str
) -> tuple[np.ndarray, np.ndarray]:
    """Values of both experiments in the cycles where both have one, in cycle order."""
    if column not in done:
        return np.array([]), np.array([])

    def by_cycle(eid: str) -> pd.Series:
        rows = done[done["experiment_id"] == eid]
        values = pd.to_numeric(rows[column], errors="coerce").astype(float)
        return pd.Series(values.to_numpy(), index=rows["cycle"].to_numpy()).dropna()

    joined = pd.concat([by_cycle(experiment), by_cycle(base)], axis=1, join="inner").sort_index()
    joined = joined[(joined.iloc[:, 1] > 0)] if len(joined) else joined
    return joined.iloc[:, 0].to_numpy(), joined.iloc[:, 1].to_numpy()


def comparisons_frame(comparisons: list[Comparison]) -> pd.DataFrame:
    return pd.DataFrame([c.as_dict() for c in comparisons])


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    """experiment id -> its swept values ('batch_size=8, precision=bf16'), as the report names
    configurations."""
    from llenergymeasure.results.aggregate import CONFIG_PREFIX, swept_parameters

    done = runs[runs["status"] == "done"] if len(runs) else runs
    swept = swept_parameters(done)
    labels: dict[str, str] = {}
    for _, row in done.drop_duplicates("experiment_id").iterrows():
        text = ", ".join(f"{p}={row[CONFIG_PREFIX + p]}" for p in swept)
        labels[str(row["experiment_id"])] = text or str(row["experiment_id"])
    return labels


def render(comparisons: list[Comparison], labels: dict[str, str], confidence: float) -> Any:
    """A rich table of the comparisons, the correction stated in its caption."""
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table(
        title="Ratios against the baseline (paired by cycle)",
        caption=f"{confidence:.0%} paired percentile-bootstrap intervals; p corrected by "
        f"{CORRECTION}. Energy: per output token, baseline-adjusted unless basis says raw.",
    )
    for name in ("metric", "experiment", "baseline", "pairs", "ratio", "CI", "p (Holm)", "basis"):
        table.add_column(name)
    for c in comparisons:
        table.add_row(
            c.metric,
            labels.get(c.experiment_id, c.experiment_id),
            labels.get(c.baseline_id, c.baseline_id),
            str(c.n_pairs),
            fmt(c.ratio),
            "-" if c.ci_low is None else f"[{fmt(c.ci_low)}, {fmt(c.ci_high)}]",
            fmt(c.p_holm) + (" *" if c.significant else ""),
            c.basis,
        )
    return table
