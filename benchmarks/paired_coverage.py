"""How often the paired-bootstrap ratio interval that `lem compare` reports holds the true ratio.

Per trial: n cycles, each with its own condition (log-normal, sigma 0.15: the cycle-to-cycle
spread seen on the H200) shared by both configurations, times the configuration's true level,
times independent per-run noise (sigma 0.05). The true ratio is 0.8. The interval is computed
exactly as the tool does (results/compare.py: paired_ratio_ci).
Run: .venv/bin/python benchmarks/paired_coverage.py [--trials 1000] [--out FILE.json]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from _record import coverage_args

from llenergymeasure.results.compare import paired_ratio_ci

TRUE_RATIO = 0.8


def main() -> None:
    args = coverage_args(__doc__, trials=1000, resamples=2000)
    rng = np.random.default_rng(20261204)
    t0 = time.perf_counter()
    coverage: dict[int, float] = {}
    print("| cycles | coverage | median CI width |")
    print("| --- | --- | --- |")
    for n in (3, 5, 10, 30):
        hits, widths = 0, []
        for trial in range(args.trials):
            condition = rng.lognormal(0.0, 0.15, n)
            base = condition * rng.lognormal(0.0, 0.05, n)
            other = TRUE_RATIO * condition * rng.lognormal(0.0, 0.05, n)
            # per-run noise has median 1 and the same law on both sides: E ratio of means -> 0.8
            found = paired_ratio_ci(
                other, base, resamples=args.resamples, confidence=args.confidence, seed=trial
            )
            assert found is not None
            _, low, high, _ = found
            hits += low <= TRUE_RATIO <= high
            widths.append(high - low)
        coverage[n] = hits / args.trials
        print(f"| {n} | {coverage[n]:.3f} | {float(np.median(widths)):.3f} |")
    print(f"took {time.perf_counter() - t0:.1f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({str(k): v for k, v in coverage.items()}, indent=2))


if __name__ == "__main__":
    main()
