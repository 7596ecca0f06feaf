"""Paired comparisons: which experiments, which baseline, what is left out, and the sentence
each one says (the statistics themselves: test_stats.py)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llenergymeasure.errors import ConfigError
from llenergymeasure.results.compare import compare, resolve, sentence
from llenergymeasure.stats import ratio_ci

ENERGY = "energy.energy_adjusted_per_output_token_j"
RAW = "energy.energy_raw_per_output_token_j"


def runs_table(factors: dict[str, float], cycles: int = 6, seed: int = 1) -> pd.DataFrame:
    """Per-run rows: each cycle has its own condition (x0.7-1.3) shared by every experiment,
    times the experiment's factor, times 2% per-run noise."""
    rng = np.random.default_rng(seed)
    condition = rng.uniform(0.7, 1.3, cycles)
    rows = []
    for c in range(cycles):
        for eid, f in factors.items():
            level = f * condition[c] * rng.lognormal(0.0, 0.02)
            rows.append(
                {
                    "experiment_id": eid,
                    "cycle": c + 1,
                    "status": "done",
                    ENERGY: 0.5 * level,
                    RAW: 0.6 * level,
                    "output_tokens_per_s": 1000.0 / level,
                    "latency.p99_s": 2.0 * level,
                }
            )
    return pd.DataFrame(rows)


def test_pairing_by_cycle_removes_the_shared_condition() -> None:
    # +-30 % between cycles, 2 % within: the paired interval is a few percent wide around 0.8
    runs = runs_table({"aaa": 1.0, "bbb": 0.8})
    found = compare(runs, ["aaa", "bbb"])
    energy = next(c for c in found.rows if c.metric == "energy_per_output_token")
    assert (energy.experiment_id, energy.baseline_id, energy.n_pairs) == ("bbb", "aaa", 6)
    pairs = [runs[runs["experiment_id"] == e][ENERGY].to_numpy() for e in ("bbb", "aaa")]
    assert (energy.ratio, energy.ci_low, energy.ci_high, energy.p_value) == ratio_ci(*pairs)
    assert energy.ci_low is not None and energy.ci_high is not None
    assert 0.75 < energy.ci_low < 0.8 < energy.ci_high < 0.85
    assert energy.significant is True and energy.basis == "adjusted"
    throughput = next(c for c in found.rows if c.metric == "output_tokens_per_s")
    assert throughput.ratio == pytest.approx(1 / energy.ratio)


def test_the_default_baseline_is_the_first_of_the_grid_not_of_the_runs() -> None:
    found = compare(runs_table({"aaa": 1.0, "bbb": 0.8, "ccc": 1.2}), ["ccc", "aaa", "bbb"])
    assert found.baseline_id == "ccc"
    assert found.baseline_reason == "the first of the campaign file's grid order"
    assert [c.experiment_id for c in found.rows][:2] == ["aaa", "bbb"]
    assert len(found.rows) == 2 * 3  # 2 experiments x 3 metrics, no other pairs


def test_two_named_experiments_are_compared_alone() -> None:
    labels = {"aaa": "batch=1", "bbb": "batch=8", "ccc": "batch=4"}
    runs = runs_table({"aaa": 1.0, "bbb": 0.8, "ccc": 1.2})
    found = compare(runs, ["aaa", "bbb", "ccc"], pair=("batch=8", "cc"), labels=labels)
    assert {(c.experiment_id, c.baseline_id) for c in found.rows} == {("bbb", "ccc")}
    assert found.rows[0].sentence.startswith(
        "batch=8 uses 33% less energy per output token than batch=4 ["
    )


def test_an_experiment_against_itself_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"A and B are the same experiment \(aaa\)"):
        compare(runs_table({"aaa": 1.0, "bbb": 0.8}), ["aaa", "bbb"], pair=("aa", "aaa"))


def test_unmeasured_metrics_are_left_out_with_one_note() -> None:
    runs = runs_table({"aaa": 1.0, "bbb": 0.8, "ccc": 1.2})
    runs[[ENERGY, RAW]] = None  # a CPU campaign
    found = compare(runs, ["aaa", "bbb", "ccc"])
    assert {c.metric for c in found.rows} == {"output_tokens_per_s", "latency_p99_s"}
    assert found.notes == ["energy per output token was not measured: left out"]


def test_missing_adjusted_energy_falls_back_to_raw_and_says_so() -> None:
    runs = runs_table({"aaa": 1.0, "bbb": 0.9})
    runs[ENERGY] = None
    (energy,) = [c for c in compare(runs, ["aaa", "bbb"]).rows if c.metric.startswith("energy")]
    assert energy.basis == "raw"
    assert "energy per output token (raw, not baseline-adjusted)" in energy.sentence


def test_significance_needs_the_holm_corrected_p() -> None:
    """Four comparisons with the same log ratios (0.02, 0.03, 0.01, 0.04: t = 3.87 on 3
    degrees of freedom, p = 0.030): each interval alone excludes 1, but Holm multiplies the
    smallest p by 4, so none is called significant."""
    condition = [1.0, 1.3, 0.8, 1.1]
    logs = [0.02, 0.03, 0.01, 0.04]
    rows = [
        {"experiment_id": e, "cycle": c + 1, "status": "done", "latency.p99_s": v * math.exp(d)}
        for c, (v, d) in enumerate(zip(condition, logs, strict=True))
        for e in ("x0", "x1", "x2", "x3")
    ] + [
        {"experiment_id": "base", "cycle": c + 1, "status": "done", "latency.p99_s": v}
        for c, v in enumerate(condition)
    ]
    found = compare(pd.DataFrame(rows), ["base", "x0", "x1", "x2", "x3"])
    assert len(found.rows) == 4 and len(found.notes) == 2  # energy and throughput: not measured
    for c in found.rows:
        assert c.p_value == pytest.approx(0.0305, abs=1e-4) and c.ci_low is not None
        assert c.ci_low > 1 and c.p_holm == pytest.approx(4 * c.p_value)
        assert c.significant is False
        assert "p = 0.030 (Holm 0.122, not significant), 4 pairs" in c.sentence


@pytest.mark.parametrize(
    ("ratio", "low", "high", "words"),
    [
        (0.88, 0.85, 0.92, "uses 12% less energy per output token than B [8.0%, 15%]"),
        (1.05, 0.97, 1.14, "uses 5.0% more energy per output token than B [3.0% less, 14% more]"),
    ],
)
def test_a_sentence_says_who_wins_and_by_how_much(
    ratio: float, low: float, high: float, words: str
) -> None:
    runs = runs_table({"aaa": 1.0, "bbb": 0.8})
    row = next(c for c in compare(runs, ["aaa", "bbb"]).rows if c.metric.startswith("energy"))
    text = sentence(replace(row, ratio=ratio, ci_low=low, ci_high=high), {"bbb": "A", "aaa": "B"})
    # the row's own p (6 pairs 20% apart) is tiny: it reads 'p < 0.001', not 'p = < 0.001'
    assert text.startswith(f"A {words}, p < 0.001 (Holm < 0.001, significant)")
    assert text.endswith(", 6 pairs, t on log ratios")


@pytest.mark.parametrize(
    ("key", "found"), [("bbb", "bbb"), ("bb", "bbb"), ("batch=8", "bbb"), ("zz", None)]
)
def test_an_experiment_by_id_prefix_or_label(key: str, found: str | None) -> None:
    ids, labels = ["aaa", "bbb"], {"aaa": "batch=4", "bbb": "batch=8"}
    if found is None:
        with pytest.raises(ConfigError, match=r"A 'zz' matches no experiment.*aaa \(batch=4\)"):
            resolve(key, ids, labels, "A")
    else:
        assert resolve(key, ids, labels, "A") == found


def test_forest_figure_full_labels_log_axis_centred_on_1(tmp_path: Path) -> None:
    from llenergymeasure.results.plots import forest_figure

    runs = runs_table({"aaa": 1.0, "bbb": 0.8, "ccc": 1.2})
    runs[[ENERGY, RAW]] = None
    long = "pytorch.attn_implementation=sdpa, batch_size=8, precision=bf16"
    labels = {"aaa": "base", "bbb": long, "ccc": long.replace("sdpa", "eager")}
    found = compare(runs, ["aaa", "bbb", "ccc"], labels=labels)
    figure = forest_figure(found, labels)
    assert len(figure.axes) == 2  # no empty energy panel
    ticks = [t.get_text().replace("\n", " ") for t in figure.axes[0].get_yticklabels()]
    assert ticks == [labels["bbb"], labels["ccc"]]  # in full
    assert list(figure.axes[0].get_yticks()) == [1, 0]  # the first compared on top
    for ax in figure.axes:
        low, high = ax.get_xlim()
        assert ax.get_xscale() == "log" and math.log(low) == pytest.approx(-math.log(high))
        assert "< 1: less than the baseline" in ax.get_title()
    title = figure.get_suptitle()
    assert "Ratio to the baseline base" in title and "energy per output token was not" in title
    figure.savefig(tmp_path / "forest.png")
    assert (tmp_path / "forest.png").stat().st_size > 1000
