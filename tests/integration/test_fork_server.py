"""The local runner's fork server on the real tiny model: PyTorch workers are forked from a
server that imported the engine, each a process of its own that says so in its result; other
jobs are spawned, with the reason in the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lem_cli import explain, only_campaign_dir, run_lem, write

from llenergymeasure.orchestrator.runners import Job
from llenergymeasure.orchestrator.runners.local import spawn_reason
from llenergymeasure.results.schema import ExperimentResult

pytestmark = pytest.mark.integration
CAMPAIGN = """\
name: forks
cycles: 1
base:
  model: builtin:tiny-llama
  n_prompts: 2
  max_output_tokens: 2
  warmup: {runs: 0}
  measurement: {sampler_hz: 0}
grid:
  seed: [1, 2]
"""


def results(out: Path) -> list[ExperimentResult]:
    paths = sorted(only_campaign_dir(out).glob("*/cycle-1/result.json"))
    return [ExperimentResult.model_validate_json(p.read_bytes()) for p in paths]


@pytest.mark.parametrize(
    ("env", "started"),
    [
        ({}, "forkserver"),
        (
            {"LEM_FORK_SERVER": "0"},
            "spawn: the runner's fork server is off (LEM_FORK_SERVER=0)",
        ),
    ],
)
def test_each_run_is_its_own_process_started_as_recorded(
    tmp_path: Path, env: dict[str, str], started: str
) -> None:
    campaign = write(tmp_path / "forks.yaml", CAMPAIGN)
    proc = run_lem("campaign", campaign, "-o", tmp_path / "out", cwd=tmp_path, env=env)
    assert proc.returncode == 0, explain(proc)
    done = results(tmp_path / "out")
    assert [r.worker_start for r in done] == [started, started]
    assert all(r.phases_s is not None and r.phases_s.worker_start_s is not None for r in done)


def job(tmp_path: Path, backend: str, env: dict[str, str]) -> Job:
    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps({"config": {"backend": backend}}))
    return Job(exp, tmp_path, tmp_path / "worker.log", env, timeout_s=60)


@pytest.mark.parametrize(
    ("backend", "env", "reason"),
    [
        ("pytorch", {"LEM_CYCLE": "1", "CUDA_VISIBLE_DEVICES": "0"}, None),
        ("vllm", {}, "the vllm engine is not forked"),
        ("tensorrt", {}, "the tensorrt engine is not forked"),
        ("pytorch", {"HF_HUB_OFFLINE": "1"}, "the job sets HF_HUB_OFFLINE"),
    ],
)
def test_which_jobs_are_spawned_and_why(
    tmp_path: Path, backend: str, env: dict[str, str], reason: str | None
) -> None:
    said = spawn_reason(job(tmp_path, backend, env))
    assert said == reason if reason is None else said is not None and said.startswith(reason)
