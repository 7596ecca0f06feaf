"""Do `llenergymeasure.stats`' intervals hold the truth as often as they say (issue 26)?

Per trial, n cycles; cycle i has a condition c_i shared by every configuration (the hour, the
temperature), and each run its own noise e: a run's value is level * c_i * e. Noise models:

- normal: c ~ N(1, 0.15), e ~ N(1, 0.05);
- heavy-tailed: c ~ N(1, 0.05), e = 1 + 0.15 / sqrt(3) * t_3 (Student t, 3 degrees of
  freedom: sd 0.15, occasional far-off runs), t_3 clipped at +-10 so that every value stays
  positive (symmetric: the mean stays 1);
- log-normal: c ~ LogN(0, 0.15), e ~ LogN(0, 0.05) (the spread seen across cycles on the H200).

mean_ci: how often its interval holds the true mean of one configuration's values (level 10).
ratio_ci: a = 0.8 x b's level, paired by cycle; how often it holds 0.8, and, with equal levels,
how often p < 0.05 (false positives). Beside them, in the same draws, the percentile bootstrap
the tool used before (resampling values, or whole cycles for the ratio of means), kept here only
for this comparison. Seeded: the same numbers on every machine.
Run: .venv/bin/python benchmarks/stats_coverage.py [--trials 2000] [--resamples 2000] [--record]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from _record import command, describe_machine, machine, now, update_results_md, write_json

from llenergymeasure.stats import MEAN_METHOD, RATIO_METHOD, mean_ci, ratio_ci

SIZES = (3, 5, 10, 30)
LEVEL, RATIO = 10.0, 0.8
Draw = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
MODELS: dict[str, tuple[Draw, Draw]] = {  # (condition, per-run noise)
    "normal": (lambda g, s: g.normal(1.0, 0.15, s), lambda g, s: g.normal(1.0, 0.05, s)),
    "heavy-tailed (t3)": (
        lambda g, s: g.normal(1.0, 0.05, s),
        lambda g, s: 1.0 + 0.15 / np.sqrt(3) * np.clip(g.standard_t(3, s), -10, 10),
    ),
    "log-normal": (
        lambda g, s: g.lognormal(0.0, 0.15, s),
        lambda g, s: g.lognormal(0.0, 0.05, s),
    ),
}


SKEWED: dict[str, tuple[Callable[[np.random.Generator, int], np.ndarray], float]] = {
    "log-normal(0, 0.5)": (lambda g, n: g.lognormal(0.0, 0.5, n), float(np.exp(0.125))),
    "exponential(1)": (lambda g, n: g.exponential(1.0, n), 1.0),
}
"""Strongly skewed values, far more than runs of one configuration across cycles (the old
bootstrap benchmark's distributions): where Student t falls short, and by how much."""


def skewed(trials: int) -> dict[str, dict[int, float]]:
    rng = np.random.default_rng(20261209)
    table: dict[str, dict[int, float]] = {}
    for name, (draw, truth) in SKEWED.items():
        table[name] = {}
        for n in SIZES:
            hits = 0
            for _ in range(trials):
                _, low, high = mean_ci(draw(rng, n))
                hits += low is not None and high is not None and low <= truth <= high
            table[name][n] = hits / trials
    return table


def true_mean(model: str) -> float:
    """E[level * c * e]: every condition and noise has mean 1 but the log-normal ones."""
    return LEVEL * (np.exp(0.15**2 / 2) * np.exp(0.05**2 / 2) if model == "log-normal" else 1.0)


def old_mean_ci(x: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[float, float]:
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def old_ratio_ci(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, resamples: int
) -> tuple[float, float, float]:
    """The tool's paired bootstrap before issue 26: (low, high, p) of mean(a)/mean(b)."""
    index = rng.integers(0, len(a), (resamples, len(a)))
    ratios = a[index].mean(axis=1) / b[index].mean(axis=1)
    low, high = np.quantile(ratios, [0.025, 0.975])
    p = min(1.0, 2.0 * min(float(np.mean(ratios <= 1.0)), float(np.mean(ratios >= 1.0))))
    return float(low), float(high), p


def run(trials: int, resamples: int) -> dict[str, dict[str, dict[int, float]]]:
    rng = np.random.default_rng(20261208)
    table: dict[str, dict[str, dict[int, float]]] = {}
    for model, (condition, noise) in MODELS.items():
        truth = true_mean(model)
        rows = {
            k: {} for k in ("mean t", "mean boot", "ratio t", "ratio boot", "fpr t", "fpr boot")
        }
        for n in SIZES:
            hits = dict.fromkeys(rows, 0)
            for _ in range(trials):
                c = condition(rng, (n,))
                x = LEVEL * c * noise(rng, (n,))
                _, low, high = mean_ci(x)
                hits["mean t"] += low is not None and high is not None and low <= truth <= high
                low, high = old_mean_ci(x, rng, resamples)
                hits["mean boot"] += low <= truth <= high
                for level, cover, false in ((RATIO, "ratio t", None), (1.0, None, "fpr t")):
                    a, b = level * c * noise(rng, (n,)), c * noise(rng, (n,))
                    _, low, high, p = ratio_ci(a, b)
                    low_b, high_b, p_b = old_ratio_ci(a, b, rng, resamples)
                    if cover:
                        hits[cover] += low is not None and high is not None and low <= RATIO <= high
                        hits["ratio boot"] += low_b <= RATIO <= high_b
                    if false:
                        hits[false] += p is not None and p < 0.05
                        hits["fpr boot"] += p_b < 0.05
            for key, count in hits.items():
                rows[key][n] = count / trials
        table[model] = rows
    return table


NAMES = {
    "mean t": f"mean_ci ({MEAN_METHOD}): coverage",
    "mean boot": "old: percentile bootstrap of the mean: coverage",
    "ratio t": f"ratio_ci ({RATIO_METHOD}): coverage",
    "ratio boot": "old: paired bootstrap of mean(a)/mean(b): coverage",
    "fpr t": f"ratio_ci ({RATIO_METHOD}): P(p < 0.05), equal levels",
    "fpr boot": "old: paired bootstrap: P(p < 0.05), equal levels",
}


def markdown(
    table: dict[str, dict[str, dict[int, float]]],
    skew: dict[str, dict[int, float]],
    info: dict[str, object],
) -> str:
    lines = [
        "## Coverage of `llenergymeasure.stats` (issue 26), beside the old bootstrap",
        "",
        f"**Machine:** {info['machine']}; {info['date']}; {info['seconds']:.0f} s.",
        f"**Command:** `{info['command']}` (raw: `benchmarks/results/stats_coverage.json`).",
        f"{info['trials']:,} trials per cell (binomial standard error at 95%: "
        f"{(0.95 * 0.05 / int(str(info['trials']))) ** 0.5:.1%}), nominal 95%; old bootstrap "
        f"with {info['resamples']:,} resamples. "
        "Noise models: benchmarks/stats_coverage.py's docstring.",
        "",
        "| noise | method | " + " | ".join(f"n={n}" for n in SIZES) + " |",
        "| --- | --- | " + " | ".join("---" for _ in SIZES) + " |",
    ]
    for model, rows in table.items():
        for key, name in NAMES.items():
            cells = " | ".join(f"{rows[key][n]:.1%}" for n in SIZES)
            lines.append(f"| {model} | {name} | {cells} |")
    lines += [
        "",
        "Strongly skewed values (the old bootstrap benchmark's distributions, far more skewed "
        "than runs across cycles): `mean_ci` falls short of 95% here.",
        "",
        "| values | " + " | ".join(f"n={n}" for n in SIZES) + " |",
        "| --- | " + " | ".join("---" for _ in SIZES) + " |",
    ]
    for name, row in skew.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[n]:.1%}" for n in SIZES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--record", action="store_true", help="write results/ and RESULTS.md")
    args = parser.parse_args()
    info: dict[str, object] = {"machine": describe_machine(machine()), "command": command()}
    t0 = time.perf_counter()
    table = run(args.trials, args.resamples)
    skew = skewed(args.trials)
    info |= {
        "seconds": time.perf_counter() - t0,
        "date": now(),
        "trials": args.trials,
        "resamples": args.resamples,
    }
    text = markdown(table, skew, info)
    print(text)
    if args.record:
        write_json("stats_coverage.json", {**info, "table": table, "skewed": skew})
        update_results_md("stats_coverage", text)


if __name__ == "__main__":
    main()
