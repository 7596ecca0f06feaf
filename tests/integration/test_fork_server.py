"""The local runner's fork server on the real tiny model: PyTorch workers are forked from a
server that imported the engine, each a process of its own that says so in its result; other
jobs are spawned, with the reason in the result. A server that initialised CUDA while
preloading (a forkable plugin engine that does so at import) forks nothing usable: its workers
restart as fresh interpreters, and their results and the terminal say so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lem_cli import backends_env, explain, only_campaign_dir, read_json, run_lem, write

from llenergymeasure.orchestrator.runners import Job
from llenergymeasure.orchestrator.runners.local import spawn_reason
from llenergymeasure.worker.forked import CUDA_IN_SERVER

pytestmark = pytest.mark.integration
CAMPAIGN = """\
name: forks
cycles: 1
base:
  model: builtin:tiny-llama
  n_prompts: 2
  max_output_tokens: 2
  warmup: {{runs: 0}}
  measurement: {{sampler_hz: 0}}
grid:
  seed: {seeds}
"""


def results(out: Path) -> list[dict[str, Any]]:
    """The results, as JSON: this test's process has not registered the plugin backends."""
    return [read_json(p) for p in sorted(only_campaign_dir(out).glob("*/cycle-1/result.json"))]


UNSAFE_NOTICE = f"notice: {CUDA_IN_SERVER}: every worker starts as a fresh interpreter instead"


@pytest.mark.parametrize(
    ("env", "started", "runs"),
    [
        ({}, "forkserver", 2),  # two workers from one server
        ({"LEM_FORK_SERVER": "0"}, "spawn: the runner's fork server is off (LEM_FORK_SERVER=0)", 1),
        (backends_env("toy_backend:CUDA_AT_IMPORT"), f"spawn: {CUDA_IN_SERVER}", 1),
    ],
    ids=["forked", "off", "cuda-in-server"],
)
def test_each_run_is_its_own_process_started_as_recorded(
    tmp_path: Path, env: dict[str, str], started: str, runs: int
) -> None:
    seeds = list(range(1, runs + 1))
    campaign = write(tmp_path / "forks.yaml", CAMPAIGN.format(seeds=seeds))
    proc = run_lem("campaign", campaign, "-o", tmp_path / "out", cwd=tmp_path, env=env)
    assert proc.returncode == 0, explain(proc)
    done = results(tmp_path / "out")
    assert [r["worker_start"] for r in done] == [started] * runs
    assert all(r["phases_s"]["worker_start_s"] is not None for r in done)
    # a full run in every case: both prompts, 2 tokens each, on the tiny model's PyTorch engine
    said = [(r["config"]["backend"], r["n_requests"], r["output_tokens"]) for r in done]
    assert said == [("pytorch", 2, 4)] * runs
    # said once on the campaign's terminal (by the fork server) when it is unsafe
    notices = proc.stderr.count(UNSAFE_NOTICE)
    assert notices == (1 if started.endswith(CUDA_IN_SERVER) else 0), explain(proc)
    # the logs hold the run, not progress bars or the resource tracker's cleanup of their lock
    logs = [p.read_text() for p in only_campaign_dir(tmp_path / "out").glob("*/*/worker.log")]
    assert len(logs) == runs
    assert not [log for log in logs if "leaked semaphore" in log or "Loading weights" in log]


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
