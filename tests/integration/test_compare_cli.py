"""`lem compare` on a real 3-cycle CPU campaign (tiny model): two experiments named, the
default baseline, words and JSON, and what it refuses (issue 26)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import explain, load_manifest, only_campaign_dir, run_lem, tiny_campaign, write

from llenergymeasure import load_results
from llenergymeasure.config import load_campaign
from llenergymeasure.stats import ratio_ci

pytestmark = pytest.mark.integration

CAMPAIGN = tiny_campaign(
    "compare-e2e",
    cycles=3,
    n_prompts=4,
    tail="order: shuffled\norder_seed: 0\ngrid:\n  batch_size: [1, 4]\n",
)


class Campaign:
    def __init__(self, directory: Path, grid: list[str], cwd: Path) -> None:
        self.dir, self.grid, self.cwd = directory, grid, cwd

    def lem(self, *args: str) -> tuple[int, str, str]:
        proc = run_lem("compare", self.dir, *args, cwd=self.cwd)
        assert "Traceback" not in proc.stderr, explain(proc)
        return proc.returncode, " ".join(proc.stdout.split()), proc.stderr


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    work = tmp_path_factory.mktemp("compare")
    write(work / ".lem-config.yaml", "gaps: {between_experiments_s: 0, between_cycles_s: 0}\n")
    file = write(work / "campaign.yaml", CAMPAIGN)
    proc = run_lem("campaign", file, "-o", work / "out", "--runner", "local", cwd=work)
    assert proc.returncode == 0, explain(proc)
    grid = [e.experiment_id for e in load_campaign(file).experiments]
    return Campaign(only_campaign_dir(work / "out"), grid, work)


def test_two_named_experiments_in_words(campaign: Campaign) -> None:
    code, out, _ = campaign.lem("batch_size=4", "batch_size=1")
    assert code == 0, out
    assert f"Baseline: batch_size=1 ({campaign.grid[0]}), named second (B)." in out
    assert "batch_size=4 has " in out and "throughput than batch_size=1 [" in out
    assert "p99 latency than batch_size=1" in out
    assert out.count(", 3 pairs, t on log ratios") == 2  # throughput and latency, no energy
    assert "Note: energy per output token was not measured: left out." in out
    assert "Holm" in out


def test_json_carries_the_same_as_the_words(campaign: Campaign) -> None:
    code, out, _ = campaign.lem(campaign.grid[1][:12], campaign.grid[0][:12], "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["baseline_id"] == campaign.grid[0]
    assert data["notes"] == ["energy per output token was not measured: left out"]
    rows = {r["metric"]: r for r in data["rows"]}
    assert set(rows) == {"output_tokens_per_s", "latency_p99_s"}
    _, words, _ = campaign.lem(campaign.grid[1][:12], campaign.grid[0][:12])
    runs = pd.read_csv(campaign.dir / "results.csv").sort_values("cycle")
    for metric, column in (("output_tokens_per_s",) * 2, ("latency_p99_s", "latency.p99_s")):
        row = rows[metric]
        assert row["sentence"] in words
        a, b = (runs[runs["experiment_id"] == e][column].to_numpy() for e in campaign.grid[1::-1])
        ratio, low, high, p = ratio_ci(a, b)
        assert (row["ratio"], row["ci_low"], row["ci_high"]) == pytest.approx((ratio, low, high))
        assert row["p_value"] == pytest.approx(p) and row["p_value"] > 0
        assert (row["n_pairs"], row["method"]) == (3, "t on log ratios")


def test_the_library_gives_what_the_cli_prints(campaign: Campaign) -> None:
    found = load_results(campaign.dir).compare(campaign.grid[1], campaign.grid[0])
    code, out, _ = campaign.lem(campaign.grid[1], campaign.grid[0], "--json")
    assert code == 0 and json.loads(out) == json.loads(json.dumps(found.as_dict()))


def test_the_default_baseline_is_the_grids_first_and_says_so(campaign: Campaign) -> None:
    first_run = load_manifest(campaign.dir).entries[0].experiment_id
    assert first_run == campaign.grid[1]  # order_seed 0 runs the grid's second one first
    code, out, _ = campaign.lem()
    assert code == 0, out
    assert (
        f"Baseline: batch_size=1 ({campaign.grid[0]}), the first of the campaign file's grid "
        "order." in out
    )
    assert out.count("than batch_size=1") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("batch_size=4",), "lem compare takes two experiments (A B), or none and --baseline"),
        (("batch_size=4", "batch_size=9"), "B 'batch_size=9' matches no experiment"),
        (("--baseline", "nope"), "--baseline 'nope' matches no experiment"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(
    campaign: Campaign, args: tuple[str, ...], message: str
) -> None:
    code, _, err = campaign.lem(*args)
    assert code == 2 and message in " ".join(err.split()), err
