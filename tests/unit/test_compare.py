"""Paired comparisons: ratio, bootstrap CI over cycles, Holm correction, baseline lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llenergymeasure.errors import ConfigError
from llenergymeasure.results.compare import compare, holm, resolve

ENERGY = "energy.energy_adjusted_per_output_token_j"


def runs_table(factors: dict[str, float], cycles: int = 6, seed: int = 1) -> pd.DataFrame:
    """Per-run rows: each cycle has its own condition (x0.7-1.3) shared by every experiment,
    times the experiment's factor; the ratio between experiments is exactly the factors'."""
    condition = np.random.default_rng(seed).uniform(0.7, 1.3, cycles)
    rows = [
        {
            "experiment_id": eid,
            "cycle": c + 1,
            "status": "done",
            ENERGY: 0.5 * f * condition[c],
            "energy.energy_raw_per_output_token_j": 0.6 * f * condition[c],
            "output_tokens_per_s": 1000.0 / (f * condition[c]),
            "latency.p99_s": 2.0 * f * condition[c],
        }
        for c in range(cycles)
        for eid, f in factors.items()
    ]
    return pd.DataFrame(rows)


def test_pairing_by_cycle_removes_the_shared_condition() -> None:
    # +-30 % between cycles, but B is 0.8 x A in every cycle: the paired interval is exact
    result = compare(runs_table({"aaa": 1.0, "bbb": 0.8}), "aaa", resamples=2000)
    energy = next(c for c in result if c.metric == "energy_per_output_token")
    assert (energy.experiment_id, energy.baseline_id, energy.n_pairs) == ("bbb", "aaa", 6)
    assert energy.ratio == pytest.approx(0.8)
    assert energy.ci_low == pytest.approx(0.8) and energy.ci_high == pytest.approx(0.8)
    assert energy.significant is True and energy.basis == "adjusted"
    throughput = next(c for c in result if c.metric == "output_tokens_per_s")
    assert throughput.ratio == pytest.approx(1.25)


def test_missing_adjusted_energy_falls_back_to_raw_and_says_so() -> None:
    table = runs_table({"aaa": 1.0, "bbb": 0.9})
    table[ENERGY] = None
    (energy,) = [c for c in compare(table, "aaa", resamples=500) if c.metric.startswith("energy")]
    assert energy.basis == "raw" and energy.ratio == pytest.approx(0.9)


def test_all_pairs_without_a_baseline() -> None:
    result = compare(runs_table({"aaa": 1.0, "bbb": 1.0, "ccc": 1.1}), resamples=500)
    assert len(result) == 3 * 3  # 3 pairs x 3 metrics
    same = next(c for c in result if {c.experiment_id, c.baseline_id} == {"aaa", "bbb"})
    assert same.significant is False and same.p_value == 1.0


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])


@pytest.mark.parametrize(
    ("key", "found"), [("bbb", "bbb"), ("bb", "bbb"), ("batch=8", "bbb"), ("zz", None)]
)
def test_baseline_by_id_prefix_or_label(key: str, found: str | None) -> None:
    ids, labels = ["aaa", "bbb"], {"aaa": "batch=4", "bbb": "batch=8"}
    if found is None:
        with pytest.raises(ConfigError, match=r"matches no experiment.*aaa \(batch=4\)"):
            resolve(key, ids, labels)
    else:
        assert resolve(key, ids, labels) == found


def test_forest_figure_draws_every_comparison(tmp_path: Path) -> None:
    from llenergymeasure.results.plots import forest_figure

    found = compare(runs_table({"aaa": 1.0, "bbb": 0.8, "ccc": 1.2}), "aaa", resamples=500)
    figure = forest_figure(found, {"bbb": "batch=8"}, "against aaa")
    assert [len(ax.get_yticklabels()) for ax in figure.axes] == [2, 2, 2]
    assert figure.axes[0].get_yticklabels()[0].get_text() == "batch=8"  # top row: first compared
    figure.savefig(tmp_path / "forest.png")
    assert (tmp_path / "forest.png").stat().st_size > 1000
