"""Server mode end to end through `lem campaign`: the PyTorch path (`transformers serve
--continuous-batching`) with the built-in model on the CPU, two levels (open loop at 4 rps,
closed loop at 3 in flight) against one server launch; and Ctrl+C during its launch."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import NO_GAPS_SETTINGS, lem_cmd, lem_env, write
from serving_checks import check_levels, processes_with, run_server_campaign

from llenergymeasure.models import resolve_model

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "transformers")),
    reason="needs the serve extra (fastapi, uvicorn) and transformers",
)

CAMPAIGN = (
    "name: serve\ncycles: 1\nrunner: local\n"
    + NO_GAPS_SETTINGS
    + """base:
  model: builtin:tiny-llama
  backend: pytorch
  mode: server
  n_prompts: 4
  max_output_tokens: 8
  measurement: {baseline: {duration_s: 0.5}}
  server:
    levels: [{rate_rps: 4}, {concurrency: 3}]
    arrival: constant
    requests_per_level: 10
    cooldown_s: 0
    warmup_requests: 2
    startup_timeout_s: 400
    slo: {ttft_p99_s: 5}
"""
)


@pytest.mark.timeout(600)
def test_server_campaign_levels_are_rows_with_ordered_requests(tmp_path: Path) -> None:
    result_dir, server = run_server_campaign(tmp_path, CAMPAIGN, ["r4", "c3"])
    assert server["launch_s"] > 0 and server["launch_energy_j"] is None  # no GPU energy here
    check_levels(result_dir, server, requests=10, completion_tokens=8, rate_rps=4)
    summary = pd.read_csv(result_dir.parents[1] / "summary.csv")
    assert set(summary["level"]) == {"r4", "c3"} and "achieved_rate_rps" in set(summary["metric"])


@pytest.mark.timeout(300)
def test_ctrl_c_during_server_launch_leaves_no_process_or_port(tmp_path: Path) -> None:
    model = resolve_model("builtin:tiny-llama")  # this checkout's path: no other run matches
    proc = subprocess.Popen(
        lem_cmd("campaign", write(tmp_path / "serve.yaml", CAMPAIGN), "--yes"),
        cwd=tmp_path,
        env=lem_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (servers := processes_with("serve\0--continuous-batching")) or not any(
        model.encode() in Path(f"/proc/{p}/cmdline").read_bytes() for p in servers
    ):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl+C sends the orchestrator
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    mine = [p for p in servers if Path(f"/proc/{p}").exists()]
    assert not mine, f"server processes left: {mine}"
