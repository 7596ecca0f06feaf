"""What every server-mode campaign test checks on a real server (a module of its own: the
PyTorch and vLLM tests import it by name): levels as rows, each request's send < first token
<= end, the window inside its level, the open loop's achieved rate, energy null on a CPU, and
no server process or port left."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from lem_cli import (
    NO_GAPS_SETTINGS,
    explain,
    only_campaign_dir,
    processes_mentioning,
    run_lem,
    write,
)

from llenergymeasure.results.schema import ServerLevel
from llenergymeasure.worker.serving.server import group_members

RATE_TOLERANCE = 0.10
"""Constant arrivals: the achieved rate (sends - 1 over the send span) within 10% of the target."""


def serve_campaign(
    name: str, levels: str, requests: int, tail: str = "", runner: str = "local", server: str = ""
) -> str:
    """A `mode: server` campaign file on the built-in model through `transformers serve`:
    constant arrivals, 8 output tokens, no cool-down; levels as YAML; tail: more top-level YAML;
    server: more `server:` keys, each a line indented by 4."""
    return (
        f"name: {name}\ncycles: 1\nrunner: {runner}\n"
        + NO_GAPS_SETTINGS
        + f"""base:
  model: builtin:tiny-llama
  backend: pytorch
  mode: server
  n_prompts: 4
  max_output_tokens: 8
  measurement: {{baseline: {{duration_s: 0.5}}}}
  server:
    levels: {levels}
    arrival: constant
    requests_per_level: {requests}
    cooldown_s: 0
    warmup_requests: 2
    startup_timeout_s: 400
    slo: {{ttft_p99_s: 5}}
"""
        + server
        + tail
    )


def run_server_campaign(tmp_path: Path, campaign: str, levels: list[str]) -> tuple[Path, Any]:
    """`lem campaign` to the end; the campaign directory and its one result's `server`."""
    proc = run_lem("campaign", write(tmp_path / "serve.yaml", campaign), "--yes", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    directory = only_campaign_dir(tmp_path / "results")
    rows = pd.read_csv(directory / "results.csv")
    assert list(rows["level"]) == levels and set(rows["status"]) == {"done"}, rows
    (result_path,) = directory.glob("*/cycle-1/result.json")
    return result_path.parent, json.loads(result_path.read_text())["server"]


def check_levels(
    result_dir: Path, server: Any, requests: int, completion_tokens: int, rate_rps: float
) -> None:
    """Every level but a trace (whose lengths are its own) as above; the launched server gone."""
    for level in (lv for lv in server["levels"] if lv["level"] != "trace"):
        table = pq.read_table(result_dir / level["requests_file"]).to_pydict()
        assert len(table["send_s"]) == requests and set(table["error"]) == {None}
        for send, first, end in zip(
            table["send_s"], table["first_token_s"], table["end_s"], strict=True
        ):
            assert send < first <= end
        assert set(table["completion_tokens"]) == {completion_tokens}  # the server's own count
        span = (min(table["send_s"]), max(table["end_s"]))
        assert span[0] <= level["window_start_s"] < level["window_end_s"] <= span[1]
        assert 0 < level["window_coverage"] <= 1
        # energy is null on a CPU, so are the per-request shares (sums: tests/unit)
        assert level["energy_window_j"] is None and set(table["energy_j"]) == {None}
    # one quality record for the experiment, holding each level's doubts (issue 17.5)
    quality = json.loads((result_dir / "result.json").read_text())["quality"]
    level_doubts = [d for lv in server["levels"] for d in ServerLevel.model_validate(lv).doubts()]
    assert set(level_doubts) <= set(quality["reasons"])
    assert quality["status"] == ("check" if quality["reasons"] else "ok")
    achieved = server["levels"][0]["achieved_rate_rps"]
    assert abs(achieved / rate_rps - 1) <= RATE_TOLERANCE, achieved
    if server["launched_by_lem"]:
        check_server_gone(server)


def check_server_gone(server: Any, *, own_pid_namespace: bool = False) -> None:
    """No process of the recorded server, nor anything on its port, is left. own_pid_namespace:
    it ran in a container, whose pids are not the host's (its port, on the host network, is)."""
    port = int(server["command"][server["command"].index("--port") + 1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server's port is still open"
    assert not processes_mentioning(f"--port\0{port}\0"), "a server process outlived the campaign"
    if not own_pid_namespace:
        assert not group_members(server["pid"]), "a process of the server's group outlived it"
