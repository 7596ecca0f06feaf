"""Server mode end to end on a real engine: `transformers serve --continuous-batching` with the
built-in model on the CPU, two levels (open loop and closed loop) through run_server_experiment."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llenergymeasure.config.server import ServerSpec
from llenergymeasure.models import resolve_model
from llenergymeasure.worker.serving.run import run_server_experiment

pytestmark = pytest.mark.skipif(
    any(
        importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "httpx", "transformers")
    ),
    reason="needs the serve extra (fastapi, uvicorn, httpx) and transformers",
)


@pytest.mark.timeout(600)
def test_two_levels_against_transformers_serve(tmp_path: Path) -> None:
    model = resolve_model("builtin:tiny-llama")
    spec = ServerSpec.model_validate(
        {
            "levels": [{"rate_rps": 4}, {"concurrency": 4}],
            "requests_per_level": 12,
            "arrival": "constant",
            "cooldown_s": 0,
            "startup_timeout_s": 480,
            "warmup_requests": 2,
            "slo": {"ttft_p99_s": 2.0},
        }
    )
    result = run_server_experiment(
        spec,
        "pytorch",
        model,
        model,
        ["Hello there, tell me a story"],
        16,
        tmp_path,
        baseline_s=0.5,
    )
    assert json.loads((tmp_path / "levels.json").read_text())["levels"][0]["level"] == "r4"
    assert result["server_launch_s"] > 0 and result["server_launch_energy_j"] is None  # CPU
    for level in result["levels"]:
        assert level["requests_ok"] == 12, level["errors"]
        assert level["window_start_s"] < level["window_end_s"] and 0 < level["window_coverage"] <= 1
        assert level["energy_per_output_token_j"] is None  # no GPU energy on a CPU
        table = pq.read_table(tmp_path / f"requests-{level['level']}.parquet").to_pydict()
        for send, first, end in zip(
            table["send_s"], table["first_token_s"], table["end_s"], strict=True
        ):
            assert send < first <= end
        assert all(n == 16 for n in table["completion_tokens"])  # the server's own count
