"""End to end on the CPU: `lem campaign` / `lem run` -> real `lem-worker`s -> real tiny-model
inference -> manifest, result.json, results.csv / results.parquet."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from lem_cli import explain, load_manifest, only_campaign_dir, read_json, run_lem, write

from llenergymeasure.config import load_campaign
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.orchestrator.manifest import Manifest
from llenergymeasure.orchestrator.schedule import run_order
from llenergymeasure.results.aggregate import METRICS
from llenergymeasure.results.schema import EnergyFigures, ExperimentResult

pytestmark = pytest.mark.integration

N_PROMPTS = 3
MAX_OUTPUT_TOKENS = 5
GAP_BETWEEN_EXPERIMENTS_S = 0.4
GAP_BETWEEN_CYCLES_S = 1.0
ORDER_SEED = 11
GRID_CAMPAIGN = f"""\
name: grid-e2e
cycles: 2
order: shuffled
order_seed: {ORDER_SEED}
gaps:
  between_experiments_s: {GAP_BETWEEN_EXPERIMENTS_S}
  between_cycles_s: {GAP_BETWEEN_CYCLES_S}
thermal_floor_c: 45
base:
  model: builtin:tiny-llama
  backend: pytorch
  n_prompts: {N_PROMPTS}
  max_output_tokens: {MAX_OUTPUT_TOKENS}
  warmup: {{runs: 1}}
grid:
  batch_size: [1, 2]
  precision: [fp32, bf16]
"""


class GridRun:
    def __init__(
        self, proc: subprocess.CompletedProcess[str], campaign_dir: Path, campaign_file: Path
    ) -> None:
        self.proc = proc
        self.dir = campaign_dir
        self.campaign_file = campaign_file
        self.manifest: Manifest = load_manifest(campaign_dir)

    def result(self, index: int) -> ExperimentResult:
        entry = self.manifest.entries[index]
        assert entry.result_path is not None
        return ExperimentResult.model_validate_json((self.dir / entry.result_path).read_bytes())


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> GridRun:
    """One real 2x2 grid x 2 cycles campaign, shared by the tests of this module."""
    work = tmp_path_factory.mktemp("grid")
    campaign_file = write(work / "grid.yaml", GRID_CAMPAIGN)
    proc = run_lem("campaign", campaign_file, "-o", work / "out", cwd=work)
    assert proc.returncode == 0, explain(proc)
    return GridRun(proc, only_campaign_dir(work / "out"), campaign_file)


def test_grid_manifest_every_entry_done_once(grid: GridRun) -> None:
    entries = grid.manifest.entries
    assert len(entries) == 8
    assert all(e.status == "done" for e in entries), [(e.key, e.status) for e in entries]
    assert all(e.attempts == 1 for e in entries)
    assert all(e.error is None for e in entries)
    assert all(e.runner == "local" for e in entries)
    assert grid.manifest.total_cycles == 2
    ids = {e.experiment_id for e in entries}
    assert len(ids) == 4
    assert sorted((e.experiment_id, e.cycle) for e in entries) == sorted(
        (i, c) for i in ids for c in (1, 2)
    )
    labels = {(e.label["batch_size"], e.label["precision"]) for e in entries}
    assert labels == {(1, "fp32"), (1, "bf16"), (2, "fp32"), (2, "bf16")}
    # a cycle repeats the whole set: all of cycle 1 ends before cycle 2 starts
    cycle1_end = max(e.finished_at for e in entries if e.cycle == 1 and e.finished_at)
    cycle2_start = min(e.started_at for e in entries if e.cycle == 2 and e.started_at)
    assert cycle1_end <= cycle2_start
    assert "8 done, 0 failed" in grid.proc.stdout, explain(grid.proc)


def test_grid_ran_in_the_recorded_shuffled_order_with_gaps(grid: GridRun) -> None:
    execution = grid.manifest.execution
    assert (execution.order, execution.order_seed) == ("shuffled", ORDER_SEED)
    assert execution.gaps.between_experiments_s == GAP_BETWEEN_EXPERIMENTS_S
    assert execution.gaps.between_cycles_s == GAP_BETWEEN_CYCLES_S
    # the manifest lists the runs in the order the seed gives, and they ran in that order
    experiments = [e.experiment_id for e in load_campaign(grid.campaign_file).experiments]
    expected = [(experiments[i], c) for i, c in run_order(4, 2, "shuffled", ORDER_SEED)]
    entries = grid.manifest.entries
    assert [(e.experiment_id, e.cycle) for e in entries] == expected
    cycle_orders = [[e.experiment_id for e in entries if e.cycle == c] for c in (1, 2)]
    assert cycle_orders[0] != cycle_orders[1]  # each cycle is shuffled anew (true for seed 11)
    for before, after in itertools.pairwise(entries):
        assert before.finished_at is not None and after.started_at is not None
        gap = GAP_BETWEEN_CYCLES_S if before.cycle != after.cycle else GAP_BETWEEN_EXPERIMENTS_S
        assert (after.started_at - before.finished_at).total_seconds() >= gap
    # no live display in a pipe: each wait is announced once, as a line
    assert "between experiments gap) before" in grid.proc.stderr, explain(grid.proc)
    assert "between cycles gap) before" in grid.proc.stderr, explain(grid.proc)


def test_progress_lines_count_runs_and_give_an_eta_off_a_terminal(grid: GridRun) -> None:
    """Piped output has no live bar: each run's line carries the count, failures, elapsed
    time and an ETA from the pace of the runs that ended."""
    lines = [line for line in grid.proc.stderr.splitlines() if line.startswith("done ")]
    progress = [
        re.search(r"\[(\d+)/8 ended, (\d+) failed, [\d:]+ elapsed, (.*)\]$", x) for x in lines
    ]
    assert all(progress) and len(progress) == 8, explain(grid.proc)
    assert [int(m.group(1)) for m in progress if m] == list(range(1, 9))
    assert {m.group(2) for m in progress if m} == {"0"}
    etas = [m.group(3) for m in progress if m]
    assert all(re.fullmatch(r"ETA \d+:\d\d:\d\d", eta) for eta in etas[:-1]), etas
    assert etas[-1] == "finished"


def test_grid_ends_with_the_statistics_table(grid: GridRun) -> None:
    stdout = " ".join(grid.proc.stdout.split())
    assert f"Campaign {grid.manifest.campaign_id}" in stdout
    assert "tokens/s" in stdout and "J/token" in stdout
    assert "n/a" in stdout  # energy: not measured, not 0
    assert "95% CI, Student t over the row's runs" in stdout  # the method, not a caveat
    summary = pd.read_csv(grid.dir / "summary.csv")
    assert len(summary) == 4 * len(METRICS)
    assert set(summary["experiment_id"]) == {e.experiment_id for e in grid.manifest.entries}


def test_lem_results_json_matches_the_results(grid: GridRun) -> None:
    proc = run_lem("results", grid.dir, "--json", cwd=grid.dir)
    assert proc.returncode == 0, explain(proc)
    data = json.loads(proc.stdout)
    assert data["campaign_id"] == grid.manifest.campaign_id
    assert data["counts"]["done"] == 8
    rows = data["summary"]
    assert len(rows) == 4 * len(METRICS)
    for row in rows:
        runs = [
            grid.result(i)
            for i, e in enumerate(grid.manifest.entries)
            if e.experiment_id == row["experiment_id"]
        ]
        if row["metric"].startswith("energy"):
            assert row["n"] == 0
            assert row["mean"] is None and row["ci_low"] is None and row["ci_high"] is None
        elif row["metric"] == "output_tokens_per_s":
            values = [r.output_tokens_per_s for r in runs]
            assert row["n"] == 2
            assert row["mean"] == pytest.approx(sum(values) / 2)
            assert row["min"] == pytest.approx(min(values))
            assert row["ci_low"] < row["mean"] < row["ci_high"]  # t, 1 degree of freedom
            assert row["ci_method"] == "Student t"
            assert {row["batch_size"], row["precision"]} == {
                runs[0].config.batch_size,
                runs[0].config.precision,
            }


def test_lem_results_group_by(grid: GridRun) -> None:
    proc = run_lem("results", grid.dir, "--group-by", "precision", "--json", cwd=grid.dir)
    assert proc.returncode == 0, explain(proc)
    rows = [r for r in json.loads(proc.stdout)["summary"] if r["metric"] == "latency_p50_s"]
    assert sorted(r["precision"] for r in rows) == ["bf16", "fp32"]
    assert all(r["n"] == 4 and r["n_experiments"] == 2 for r in rows)  # batch sizes pooled
    proc = run_lem("results", grid.dir, "--group-by", "precison", cwd=grid.dir)
    assert proc.returncode == 2, explain(proc)
    assert "group_by key 'precison' is not an experiment parameter" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lem_report_on_the_real_campaign(grid: GridRun, tmp_path: Path) -> None:
    # The NVML sampler (another piece of work) writes timeseries.parquet beside result.json;
    # here the test writes one with known values for one run.
    entry = grid.manifest.entries[0]
    t_s = [0.1 * i for i in range(30)]
    pd.DataFrame(
        {
            "t_s": t_s,
            "phase": ["warmup"] * 10 + ["measured"] * 20,
            "power_w": [80.0 + t for t in t_s],
        }
    ).to_parquet(grid.dir / Path(entry.exp_path).parent / "timeseries.parquet")
    out = tmp_path / "report"
    proc = run_lem(
        "report", grid.dir, "-o", out, "--timeseries", entry.experiment_id[:14], cwd=tmp_path
    )
    assert proc.returncode == 0, explain(proc)
    assert str(out / "report.html") in " ".join(proc.stdout.split())
    assert sorted(p.name for p in out.glob("*.png")) == [
        "compare_forest.png",
        "cycle_spread.png",
        "metrics_vs_batch_size.png",
        "metrics_vs_precision.png",
        "pareto.png",
        "power_timeseries.png",
    ]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
    page = (out / "report.html").read_text(encoding="utf-8")
    assert grid.manifest.campaign_id in page
    assert "No energy was measured in this campaign" in page
    assert "shuffled (order_seed 11)" in page
    assert "thermal floor 45 °C not checked" in page
    assert page.count("data:image/png;base64,") == 6
    assert "https://" not in page and "http://" not in page
    assert "has no power time-series" not in page  # the chosen run's file was drawn


def test_thermal_floor_without_nvml_is_reported_not_ignored(grid: GridRun) -> None:
    assert grid.manifest.execution.thermal_floor_c == 45
    stderr = " ".join(grid.proc.stderr.split())
    assert "thermal_floor_c is 45 °C but GPU temperature cannot be read" in stderr
    assert "the floor cannot be checked" in stderr
    for entry in grid.manifest.entries:
        assert len(entry.warnings) == 1
        assert entry.warnings[0].startswith("thermal floor 45 °C not checked: ")
    table = pd.read_csv(grid.dir / "results.csv")
    assert table["measurement_warnings"].str.contains("thermal floor 45 °C not checked").all()


def test_grid_results_are_valid_and_measured(grid: GridRun) -> None:
    for index, entry in enumerate(grid.manifest.entries):
        assert entry.result_path == str(Path(entry.exp_path).parent / "result.json")
        result = grid.result(index)
        assert result.experiment_id == entry.experiment_id
        assert result.cycle == entry.cycle
        assert result.campaign_id == grid.manifest.campaign_id
        assert result.attempt == 1
        assert result.config.batch_size == entry.label["batch_size"]
        assert result.config.precision == entry.label["precision"]
        assert result.config.decoding.ignore_eos is True
        assert result.n_requests == N_PROMPTS
        assert len(result.request_latencies_s) == N_PROMPTS
        assert result.output_tokens == N_PROMPTS * MAX_OUTPUT_TOKENS
        assert result.input_tokens > 0
        assert result.measured_duration_s > 0
        assert result.output_tokens_per_s > 0
        assert result.output_tokens_per_s == pytest.approx(
            result.output_tokens / result.measured_duration_s
        )
        assert result.total_tokens_per_s > result.output_tokens_per_s
        assert result.requests_per_s > 0
        assert 0 < result.latency.p50_s <= result.latency.max_s
        assert result.offline.warmup.runs == 1
        assert result.offline.warmup.converged is None
        assert len(result.offline.warmup.latencies_s) == 1
        assert result.offline.warmup_s >= result.offline.warmup.latencies_s[0] > 0
        # the load phase: engine import (torch + transformers) timed apart from the model load
        assert result.offline.engine_import_s > 0
        phases = (
            result.offline.engine_import_s
            + result.model_load_s
            + result.offline.warmup_s
            + result.measured_duration_s
        )
        assert phases <= (result.finished_at - result.started_at).total_seconds()
        assert entry.started_at is not None and entry.finished_at is not None
        assert entry.started_at <= result.started_at <= result.finished_at <= entry.finished_at
        assert result.environment.device == "cpu"
        assert result.offline.peak_memory_mb is not None and result.offline.peak_memory_mb > 0
        # no GPU energy source on a CPU: every GPU energy figure null (never 0), and said so
        # (CPU package energy comes from RAPL where the host exposes it; it is never GPU energy)
        host = {"cpu_package_energy_j", "cpu_dram_energy_j", "host"}
        gpu_energy = result.energy.model_dump(exclude=host)
        assert gpu_energy == EnergyFigures().model_dump(exclude=host)
        assert result.energy.host is not None  # RAPL per socket, or why not readable
        assert gpu_energy.pop("per_gpu") == []
        assert all(v is None for v in gpu_energy.values())
        assert result.energy.cpu_package_energy_j != 0
        assert any("no energy source" in w for w in result.measurement_warnings), (
            result.measurement_warnings
        )
        assert result.flags.energy_counter_unsupported is None
        assert result.environment.gpus == []
        assert result.timeseries_file is None
        assert result.sampler_hz is None
        assert result.window_end_unix_s - result.window_start_unix_s == pytest.approx(
            result.measured_duration_s, abs=0.05
        )


def test_grid_worker_got_campaign_context(grid: GridRun) -> None:
    for entry in grid.manifest.entries:
        exp_path = grid.dir / entry.exp_path
        spec = ExperimentSpec.model_validate_json(exp_path.read_bytes())
        assert spec.campaign_id == grid.manifest.campaign_id
        assert spec.campaign_name == "grid-e2e"
        assert spec.experiment_id == entry.experiment_id
        assert spec.cycle == entry.cycle
        assert spec.total_cycles == 2
        assert spec.attempt == 1
        assert Path(spec.output_dir) == exp_path.parent
        log = (exp_path.parent / "worker.log").read_text()
        assert "measured window" in log
        assert not (exp_path.parent / "error.json").exists()
    assert (grid.dir / "campaign.yaml").read_text() == GRID_CAMPAIGN


@pytest.mark.parametrize("name", ["results.csv", "results.parquet"])
def test_grid_tables_have_one_flat_row_per_cycle(grid: GridRun, name: str) -> None:
    path = grid.dir / name
    frame = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
    assert len(frame) == 8
    for column in (
        "experiment_id",
        "cycle",
        "status",
        "attempts",
        "config.batch_size",
        "config.precision",
        "output_tokens_per_s",
        "latency.p50_s",
        "energy.energy_raw_j",
        "measurement_warnings",
    ):
        assert column in frame.columns, column
    assert "request_latencies_s" not in frame.columns
    assert not any(isinstance(v, (list, dict)) for v in frame.to_numpy().ravel())
    assert set(frame["status"]) == {"done"}
    assert (frame["output_tokens_per_s"] > 0).all()
    assert frame["energy.energy_raw_j"].isna().all()
    by_key = {(r["experiment_id"], int(r["cycle"])): r for r in frame.to_dict("records")}
    assert len(by_key) == 8
    for index, entry in enumerate(grid.manifest.entries):
        row = by_key[(entry.experiment_id, entry.cycle)]
        result = grid.result(index)
        assert row["config.batch_size"] == result.config.batch_size
        assert row["config.precision"] == result.config.precision
        assert row["output_tokens"] == result.output_tokens
        assert row["output_tokens_per_s"] == pytest.approx(result.output_tokens_per_s)


def test_run_single_experiment_file(tmp_path: Path) -> None:
    experiment = write(
        tmp_path / "experiment.yaml",
        "model: builtin:tiny-llama\n"
        "n_prompts: 2\n"
        "max_output_tokens: 4\n"
        "warmup: {runs: 0}\n"
        "batch_size: 2\n",
    )
    proc = run_lem("run", experiment, "-o", tmp_path / "out", "-v", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    manifest = load_manifest(campaign_dir)
    assert [(e.status, e.attempts, e.cycle) for e in manifest.entries] == [("done", 1, 1)]
    # A single run has no interval; -v names its worker log.
    assert "none from 1 run" in " ".join(proc.stdout.split()), explain(proc)
    log = campaign_dir / Path(manifest.entries[0].exp_path).parent / "worker.log"
    assert f"log {log}" in proc.stdout and log.is_file(), explain(proc)
    assert manifest.campaign_name == "experiment"
    results = list(campaign_dir.glob("*/cycle-*/result.json"))
    assert len(results) == 1
    result = ExperimentResult.model_validate_json(results[0].read_bytes())
    assert result.config.batch_size == 2
    assert result.n_requests == 2
    assert result.output_tokens == 2 * 4
    assert result.offline.warmup.runs == 0
    assert result.offline.warmup.latencies_s == []
    assert len(pd.read_csv(campaign_dir / "results.csv")) == 1


JSONL_PROMPTS = [
    "Explain in one sentence why the sky is blue.",
    "List three uses of a paperclip.",
    "Write a short poem about energy measurement on graphics processors.",
]


def _tokenizer() -> Any:
    import transformers

    from llenergymeasure.models import resolve_model

    return transformers.AutoTokenizer.from_pretrained(resolve_model("builtin:tiny-llama"))


def test_synthetic_and_relative_jsonl_prompt_sources(tmp_path: Path) -> None:
    conf = tmp_path / "conf"  # the campaign file lives here; the CLI runs in tmp_path
    write(conf / "prompts.jsonl", "".join(f'{{"prompt": "{p}"}}\n' for p in JSONL_PROMPTS))
    campaign_file = write(
        conf / "sources.yaml",
        f"""\
name: sources
cycles: 1
base:
  n_prompts: {len(JSONL_PROMPTS)}
  max_output_tokens: 4
  warmup: {{runs: 0}}
  batch_size: 1
experiments:
  - prompts: {{source: synthetic, input_tokens: 16}}
  - prompts: {{source: jsonl, path: prompts.jsonl}}
""",
    )
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    manifest = load_manifest(campaign_dir)
    assert [e.status for e in manifest.entries] == ["done", "done"]
    results = {
        r.config.prompts.source: r
        for r in (
            ExperimentResult.model_validate_json((campaign_dir / str(e.result_path)).read_bytes())
            for e in manifest.entries
        )
    }
    tokenizer = _tokenizer()
    # what the engine adds to every request (<s> for the tiny llama)
    special = len(tokenizer("x")["input_ids"]) - len(
        tokenizer("x", add_special_tokens=False)["input_ids"]
    )
    assert special == 1

    synthetic = results["synthetic"]
    assert synthetic.config.prompts.input_tokens == 16
    assert synthetic.n_requests == len(JSONL_PROMPTS)
    # every synthetic prompt is exactly 16 tokens of text; the engine prepends its BOS
    assert synthetic.input_tokens == synthetic.n_requests * (16 + special)
    assert synthetic.output_tokens == synthetic.n_requests * 4

    jsonl = results["jsonl"]
    assert jsonl.config.prompts.path == "prompts.jsonl"
    assert jsonl.n_requests == len(JSONL_PROMPTS)
    assert jsonl.input_tokens == sum(len(tokenizer(p)["input_ids"]) for p in JSONL_PROMPTS)
    assert jsonl.output_tokens == len(JSONL_PROMPTS) * 4
    (jsonl_entry,) = [e for e in manifest.entries if e.label["prompts.source"] == "jsonl"]
    spec = read_json(campaign_dir / jsonl_entry.exp_path)
    assert spec["base_dir"] == str(conf.resolve())
