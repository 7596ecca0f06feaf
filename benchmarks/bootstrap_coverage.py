"""How often the percentile-bootstrap CI that `lem results` reports holds the true mean.

Draws many samples of n runs from known distributions, computes the CI exactly as the tool
does (results/aggregate.py: bootstrap_ci), and counts how often it contains the true mean.
Run: .venv/bin/python benchmarks/bootstrap_coverage.py [--trials 2000] [--out FILE.json]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _record import coverage_args

from llenergymeasure.results.aggregate import bootstrap_ci

Sampler = Callable[[np.random.Generator, int], np.ndarray]
DISTRIBUTIONS: dict[str, tuple[Sampler, float]] = {
    "normal(10, 2)": (lambda rng, n: rng.normal(10.0, 2.0, n), 10.0),
    "lognormal(0, 0.5)": (lambda rng, n: rng.lognormal(0.0, 0.5, n), float(np.exp(0.125))),
    "exponential(1)": (lambda rng, n: rng.exponential(1.0, n), 1.0),
}


def main() -> None:
    args = coverage_args(__doc__, trials=2000, resamples=10_000)
    print("| distribution | n=3 | n=5 | n=10 | n=30 |")
    print("| --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(20251123)
    t0 = time.perf_counter()
    coverage: dict[str, dict[int, float]] = {}
    for name, (sample, true_mean) in DISTRIBUTIONS.items():
        cells = []
        coverage[name] = {}
        for n in (3, 5, 10, 30):
            hits = 0
            for trial in range(args.trials):
                ci = bootstrap_ci(
                    sample(rng, n),
                    resamples=args.resamples,
                    confidence=args.confidence,
                    seed=trial,
                )
                assert ci is not None
                hits += ci[0] <= true_mean <= ci[1]
            coverage[name][n] = hits / args.trials
            cells.append(f"{hits / args.trials:.1%}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.out:
        settings = {k: getattr(args, k) for k in ("trials", "resamples", "confidence")}
        data = {"settings": settings, "coverage": coverage}
        Path(args.out).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
