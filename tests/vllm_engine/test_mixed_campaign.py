"""One campaign, two backends: `lem campaign` with pytorch and vllm in one grid and
backend-scoped keys, through real `lem-worker`s (vLLM's engine started with spawn from the
worker), finishing with results from both that count the same tokens for the same prompts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lem_cli import (
    explain,
    load_manifest,
    only_campaign_dir,
    process_env,
    run_lem,
    wait_until_no_process_mentions,
    write,
)
from vllm_helpers import KV_CACHE_BYTES

from llenergymeasure.orchestrator.manifest import Manifest
from llenergymeasure.results.schema import ExperimentResult

pytest.importorskip(
    "vllm", reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm"
)
pytestmark = pytest.mark.integration

N_PROMPTS = 3
MAX_OUTPUT_TOKENS = 5
CAMPAIGN = f"""\
name: mixed
cycles: 1
base:
  model: builtin:tiny-llama
  n_prompts: {N_PROMPTS}
  max_input_tokens: 24
  max_output_tokens: {MAX_OUTPUT_TOKENS}
  warmup: {{runs: 1}}
  batch_size: 3
  vllm: {{kv_cache_memory_bytes: {KV_CACHE_BYTES}, enforce_eager: true}}
grid:
  backend: [pytorch, vllm]
  decoding.ignore_eos: [true, false]
  pytorch.attn_implementation: [eager, sdpa]
  vllm.max_num_seqs: [2]
"""


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str], campaign_dir: Path) -> None:
        self.proc, self.dir = proc, campaign_dir
        self.manifest: Manifest = load_manifest(campaign_dir)

    def results(self, backend: str) -> list[ExperimentResult]:
        out = []
        for entry in self.manifest.entries:
            if entry.backend == backend and entry.result_path is not None:
                path = self.dir / entry.result_path
                out.append(ExperimentResult.model_validate_json(path.read_bytes()))
        return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    work = tmp_path_factory.mktemp("mixed")
    campaign_file = write(work / "mixed.yaml", CAMPAIGN)
    proc = run_lem("campaign", campaign_file, "-o", work / "out", cwd=work)
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(work / "out")
    # every worker and every engine process it started has ended with the campaign
    assert not wait_until_no_process_mentions(campaign_dir, within_s=10.0)
    return Run(proc, campaign_dir)


def test_both_backends_ran_their_own_grids(run: Run) -> None:
    entries = run.manifest.entries
    assert all(e.status == "done" for e in entries), [(e.key, e.status, e.error) for e in entries]
    labels = sorted((e.backend, tuple(sorted(e.label.items()))) for e in entries)
    pytorch = [lab for b, lab in labels if b == "pytorch"]
    vllm = [dict(lab) for b, lab in labels if b == "vllm"]
    assert len(pytorch) == 4  # 2 ignore_eos x 2 attention kernels
    assert vllm == [
        {"backend": "vllm", "decoding.ignore_eos": v, "vllm.max_num_seqs": 2} for v in (False, True)
    ]
    assert f"{len(entries)} done, 0 failed" in run.proc.stdout, explain(run.proc)


def test_backend_scoped_keys_reached_each_engine(run: Run) -> None:
    for result in run.results("pytorch"):
        assert result.config.vllm is None
        assert result.config.pytorch is not None
        attn = result.config.pytorch.attn_implementation
        assert result.offline.engine_settings["attn_implementation"] == attn
    for result in run.results("vllm"):
        assert result.config.pytorch is None
        settings = result.offline.engine_settings
        assert settings["max_num_seqs"] == 2
        assert settings["kv_cache_memory_bytes"] == KV_CACHE_BYTES
        assert settings["enforce_eager"] is True
        # the engine's processes were started with spawn from the lem-worker process
        assert settings["multiproc_method"] == "spawn"
        assert result.environment.library_versions["vllm"]


def test_same_prompts_and_greedy_settings_give_the_same_token_counts(run: Run) -> None:
    by_backend = {b: run.results(b) for b in ("pytorch", "vllm")}
    for ignore_eos in (True, False):
        counts = {
            (b, r.config.pytorch.attn_implementation if r.config.pytorch else None): (
                r.n_requests,
                r.input_tokens,
                r.output_tokens,
            )
            for b, results in by_backend.items()
            for r in results
            if r.config.decoding.ignore_eos is ignore_eos
        }
        assert len(counts) == 3
        assert len(set(counts.values())) == 1, counts
    assert by_backend["vllm"][0].output_tokens == N_PROMPTS * MAX_OUTPUT_TOKENS


def test_engine_request_metrics_where_the_backend_has_them(run: Run) -> None:
    for result in run.results("vllm"):
        assert result.offline.ttft is not None and result.offline.ttft.mean_s > 0
        assert (
            result.offline.inter_token_latency is not None
            and result.offline.inter_token_latency.mean_s > 0
        )
        assert result.offline.ttft.max_s <= result.latency.max_s
    for result in run.results("pytorch"):
        assert result.offline.ttft is None
        assert result.offline.inter_token_latency is None


def test_both_backends_report_the_same_model_size(run: Run) -> None:
    sizes = {r.offline.model_parameters for b in ("pytorch", "vllm") for r in run.results(b)}
    assert len(sizes) == 1 and None not in sizes


def test_no_engine_process_outlives_the_campaign(run: Run) -> None:
    # engine processes inherit the worker's environment, which names the campaign
    campaign_id = run.manifest.campaign_id
    leftovers = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            if process_env(int(proc_dir.name)).get("LEM_CAMPAIGN_ID") == campaign_id:
                leftovers.append(int(proc_dir.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    assert not leftovers


def test_engine_output_stays_in_worker_logs(run: Run) -> None:
    """vLLM's engine processes log a lot (INFO lines, progress bars): all of it goes to each
    experiment's worker.log, none of it to the console."""
    vllm_logs = [
        run.dir / Path(e.exp_path).parent / "worker.log"
        for e in run.manifest.entries
        if e.backend == "vllm"
    ]
    worker_lines = {
        line.strip()
        for log in vllm_logs
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    }
    assert any("vllm" in line.lower() and "INFO" in line for line in worker_lines)
    console = {line.strip() for line in (run.proc.stdout + run.proc.stderr).splitlines()}
    assert not worker_lines & console, explain(run.proc)
