"""Server mode end to end through `lem campaign`: the PyTorch path (`transformers serve
--continuous-batching`) with the built-in model on the CPU, two levels (open loop at 4 rps,
closed loop at 3 in flight) against one server launch, then `lem report`."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from lem_cli import (
    NO_GAPS_SETTINGS,
    explain,
    lem_cmd,
    lem_env,
    only_campaign_dir,
    run_lem,
    write,
)

from llenergymeasure.models import resolve_model

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "transformers")),
    reason="needs the serve extra (fastapi, uvicorn) and transformers",
)

RATE_TOLERANCE = 0.10
"""Constant arrivals at 4 rps: the achieved rate (sends - 1 over the send span) within 10%."""

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
    proc = run_lem("campaign", write(tmp_path / "serve.yaml", CAMPAIGN), "--yes", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    campaign = only_campaign_dir(tmp_path / "results")
    rows = pd.read_csv(campaign / "results.csv")
    assert list(rows["level"]) == ["r4", "c3"] and set(rows["status"]) == {"done"}, rows
    (result_path,) = campaign.glob("*/cycle-1/result.json")
    result = json.loads(result_path.read_text())
    server = result["server"]
    assert server["launch_s"] > 0 and server["launch_energy_j"] is None  # no GPU energy here
    for level in server["levels"]:
        table = pq.read_table(result_path.parent / level["requests_file"]).to_pydict()
        assert len(table["send_s"]) == 10 and all(e is None for e in table["error"])
        for send, first, end in zip(
            table["send_s"], table["first_token_s"], table["end_s"], strict=True
        ):
            assert send < first <= end
        assert all(n == 8 for n in table["completion_tokens"])  # the server's own count
        level_span = (min(table["send_s"]), max(table["end_s"]))
        assert level_span[0] <= level["window_start_s"] < level["window_end_s"] <= level_span[1]
        assert 0 < level["window_coverage"] <= 1
        # energy is null on a CPU, so are the per-request shares (sums: tests/unit)
        assert level["energy_window_j"] is None and set(table["energy_j"]) == {None}
    open_loop = server["levels"][0]
    assert abs(open_loop["achieved_rate_rps"] / 4 - 1) <= RATE_TOLERANCE, open_loop
    summary = pd.read_csv(campaign / "summary.csv")
    assert set(summary["level"]) == {"r4", "c3"} and "achieved_rate_rps" in set(summary["metric"])
    port = int(server["command"][server["command"].index("--port") + 1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server's port is still open"
    assert not _processes_with(f"--port\0{port}"), "a server process outlived the campaign"
    assert not _in_group(server["pid"]), "a process of the server's group outlived the campaign"


def _in_group(pgid: int) -> list[int]:
    """Live processes of a process group (the server's children, e.g. its model process)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def _processes_with(needle: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if needle.encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            continue
    return out


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
    while not (servers := _processes_with("serve\0--continuous-batching")) or not any(
        model.encode() in Path(f"/proc/{p}/cmdline").read_bytes() for p in servers
    ):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl+C sends the orchestrator
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    mine = [p for p in servers if Path(f"/proc/{p}").exists()]
    assert not mine, f"server processes left: {mine}"
