"""Paired comparisons between configurations of one campaign, said in words.

Runs of two experiments in the same cycle share their conditions (the hour, the temperature,
the neighbours), so a configuration is compared with the baseline cycle by cycle:
llenergymeasure.stats.ratio_ci (t on the log per-cycle ratios). Holm's step-down method
corrects the p-values for the number of comparisons of a metric, and only a corrected p below
1 - confidence is called significant; the intervals are per comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from llenergymeasure.errors import ConfigError
from llenergymeasure.stats import RATIO_METHOD, holm, ratio_ci

COMPARED: dict[str, tuple[str, str, str, str, str]] = {
    "energy_per_output_token": (
        "energy.energy_adjusted_per_output_token_j",
        "uses",
        "energy per output token",
        "more",
        "less",
    ),
    "output_tokens_per_s": ("output_tokens_per_s", "has", "throughput", "higher", "lower"),
    "latency_p99_s": ("latency.p99_s", "has", "p99 latency", "higher", "lower"),
}
"""Compared metric -> (column of the per-run table, verb, noun, word above 1, word below 1).
Energy falls back to raw when the baseline-adjusted figure is missing for either side (then
`basis` says raw)."""
RAW_ENERGY = "energy.energy_raw_per_output_token_j"
CORRECTION = "Holm (step-down) over the comparisons of each metric; intervals per comparison"


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
    method: str = RATIO_METHOD
    sentence: str = ""


@dataclass(frozen=True)
class Comparisons:
    """What `lem compare` and the report show: the rows, their baseline and why it is the
    baseline, and a note per metric left out."""

    baseline_id: str
    baseline_reason: str
    confidence: float
    rows: list[Comparison]
    notes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"correction": CORRECTION}


def compare(
    runs: pd.DataFrame,
    order: list[str],
    *,
    pair: tuple[str, str] | None = None,
    baseline: str | None = None,
    labels: dict[str, str] | None = None,
    confidence: float = 0.95,
) -> Comparisons:
    """`pair` (experiment, baseline), else every experiment against `baseline` (an id, a
    unique id prefix or a label; default: the first of `order`, the campaign file's grid
    order, with done runs)."""
    labels = labels or {}
    done = runs[runs["status"] == "done"] if len(runs) else runs
    found = set(str(i) for i in done["experiment_id"]) if len(done) else set()
    ids = [i for i in order if i in found] + sorted(found - set(order))
    if len(ids) < 2:
        raise ConfigError("compare needs at least two experiments with done runs")
    if pair is not None:
        base = resolve(pair[1], ids, labels, "B")
        pairs = [(resolve(pair[0], ids, labels, "A"), base)]
        if pairs[0][0] == base:
            raise ConfigError(f"A and B are the same experiment ({base}): nothing to compare")
        reason = "named second (B)"
    else:
        base = resolve(baseline, ids, labels, "--baseline") if baseline else ids[0]
        reason = "--baseline" if baseline else "the first of the campaign file's grid order"
        pairs = [(e, base) for e in ids if e != base]
    rows: list[Comparison] = []
    notes: list[str] = []
    for metric in COMPARED:
        found_rows = [_one(done, metric, e, b, confidence) for e, b in pairs]
        kept = [r for r in found_rows if r.n_pairs]
        if len(kept) < len(found_rows):
            what = "was not measured" if not kept else "has no paired cycles in some comparisons"
            notes.append(f"{COMPARED[metric][2]} {what}: left out")
        adjusted = holm([r.p_value for r in kept])
        alpha = 1.0 - confidence
        for r, p in zip(kept, adjusted, strict=True):
            held = replace(r, p_holm=p, significant=p is not None and p < alpha)
            rows.append(replace(held, sentence=sentence(held, labels)))
    return Comparisons(base, reason, confidence, rows, notes, labels)


def resolve(key: str, ids: list[str], labels: dict[str, str], what: str) -> str:
    """An experiment id from an id, a unique id prefix or an exact label."""
    by_label = [i for i in ids if labels.get(i) == key]
    matches = by_label or [i for i in ids if i.startswith(key)]
    if len(matches) != 1:
        known = ", ".join(f"{i} ({labels[i]})" if i in labels else i for i in ids)
        how = "matches no" if not matches else "matches more than one"
        raise ConfigError(f"{what} {key!r} {how} experiment with done runs; known: {known}")
    return matches[0]


def sentence(c: Comparison, labels: dict[str, str]) -> str:
    """'A uses 12% less energy per output token than B [8%, 15%], p = 0.004 (Holm 0.008,
    significant), 3 pairs, t on log ratios'."""
    _, verb, noun, above, below = COMPARED[c.metric]
    noun += " (raw, not baseline-adjusted)" if c.basis == "raw" else ""
    a, b = labels.get(c.experiment_id, c.experiment_id), labels.get(c.baseline_id, c.baseline_id)
    assert c.ratio is not None
    if abs(c.ratio - 1) < 0.0005:
        head = f"{a} {verb} the same {noun} as {b}"
    else:
        head = f"{a} {verb} {_pct(c.ratio)} {above if c.ratio > 1 else below} {noun} than {b}"
    if c.ci_low is None or c.ci_high is None or c.p_value is None or c.p_holm is None:
        why = "every pair gives the same ratio" if c.n_pairs > 1 else "needs 2 pairs"
        return f"{head}, {c.n_pairs} pair(s), no interval ({why})"
    if c.ci_low > 1 or c.ci_high < 1:
        ends = sorted([_pct(c.ci_low), _pct(c.ci_high)], key=lambda s: float(s[:-1]))
        interval = f"[{ends[0]}, {ends[1]}]"
    else:
        interval = f"[{_pct(c.ci_low)} {below}, {_pct(c.ci_high)} {above}]"
    verdict = "significant" if c.significant else "not significant"
    return (
        f"{head} {interval}, p {_p(c.p_value, '= ')} (Holm {_p(c.p_holm)}, {verdict}), "
        f"{c.n_pairs} pairs, {c.method}"
    )


def _pct(ratio: float) -> str:
    return f"{abs(ratio - 1) * 100:.{0 if abs(ratio - 1) >= 0.1 else 1}f}%"


def _p(p: float, equals: str = "") -> str:
    return "< 0.001" if p < 0.001 else f"{equals}{p:.3f}"


def _one(
    done: pd.DataFrame, metric: str, experiment: str, base: str, confidence: float
) -> Comparison:
    basis = "adjusted" if metric == "energy_per_output_token" else "-"
    a, b = _paired(done, COMPARED[metric][0], experiment, base)
    if metric == "energy_per_output_token" and not len(a):
        a, b = _paired(done, RAW_ENERGY, experiment, base)
        basis = "raw"
    ratio, low, high, p = ratio_ci(a, b, confidence) if len(a) else (None, None, None, None)
    return Comparison(metric, experiment, base, len(a), ratio, low, high, p, None, None, basis)


def _paired(
    done: pd.DataFrame, column: str, experiment: str, base: str
) -> tuple[np.ndarray, np.ndarray]:
    """Positive values of both experiments in the cycles where both have one, by cycle."""
    if column not in done:
        return np.array([]), np.array([])

    def by_cycle(eid: str) -> pd.Series:
        rows = done[done["experiment_id"] == eid]
        values = pd.to_numeric(rows[column], errors="coerce").astype(float)
        return pd.Series(values.to_numpy(), index=rows["cycle"].to_numpy()).dropna()

    joined = pd.concat([by_cycle(experiment), by_cycle(base)], axis=1, join="inner").sort_index()
    joined = joined[(joined > 0).all(axis=1)]
    return joined.iloc[:, 0].to_numpy(), joined.iloc[:, 1].to_numpy()


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    """experiment id -> its swept values ('batch_size=8, precision=bf16'), in full."""
    from llenergymeasure.results.aggregate import CONFIG_PREFIX, swept_parameters

    done = runs[runs["status"] == "done"] if len(runs) else runs
    swept = swept_parameters(done)
    labels: dict[str, str] = {}
    for _, row in done.drop_duplicates("experiment_id").iterrows():
        text = ", ".join(f"{p}={row[CONFIG_PREFIX + p]}" for p in swept)
        labels[str(row["experiment_id"])] = text or str(row["experiment_id"])
    return labels


def lines(found: Comparisons) -> list[str]:
    """What `lem compare` prints: the baseline and why, one sentence per comparison, notes."""
    base = found.baseline_id
    name = f"{found.labels[base]} ({base})" if found.labels.get(base, base) != base else base
    out = [f"Baseline: {name}, {found.baseline_reason}."]
    out += [f"{'* ' if c.significant else '  '}{c.sentence}" for c in found.rows]
    out += [f"Note: {n}." for n in found.notes]
    out.append(
        f"{found.confidence:.0%} intervals, paired by cycle ({RATIO_METHOD}); * : significant "
        f"after {CORRECTION}."
    )
    return out
