"""A server people already run (issue 31): a real `transformers serve` that this test starts
on 127.0.0.1 and stops itself, measured through `server.url` with two levels and the shipped
synthetic trace; lem launches nothing, records the endpoint and the model the server reports,
and leaves the server running. `lem report` draws the trace's per-request energy figure."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from lem_cli import explain, run_lem
from serving_checks import check_levels, run_server_campaign, serve_campaign

from llenergymeasure.config.trace import read_trace
from llenergymeasure.models import resolve_model
from llenergymeasure.worker.serving.server import free_port

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "transformers")),
    reason="needs the serve extra (fastapi, uvicorn) and transformers",
)

TRACE = Path(__file__).resolve().parents[2] / "campaigns" / "traces" / "synthetic.jsonl"
SPEED = 2.0


@contextlib.contextmanager
def serving_by_hand(tmp_path: Path) -> Iterator[str]:
    """`transformers serve` as a user starts it (a small KV cache: the CPU default sizes it
    from free memory); the URL while it runs; stopped here, never by lem."""
    port = free_port()
    model = str(resolve_model("builtin:tiny-llama"))
    command = [str(Path(sys.executable).parent / "transformers"), "serve", "--continuous-batching"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    command += ["--cb-num-blocks", "256", model]
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not _healthy(url):
            assert server.poll() is None and time.monotonic() < deadline, explain_log(tmp_path)
            time.sleep(0.5)
        yield url
        assert server.poll() is None and _healthy(url), "lem stopped a server it did not start"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def explain_log(tmp_path: Path) -> str:
    return (tmp_path / "serve.log").read_text(errors="replace")[-2000:]


@pytest.mark.timeout(600)
def test_a_running_server_is_measured_through_its_url_with_levels_and_a_trace(
    tmp_path: Path,
) -> None:
    with serving_by_hand(tmp_path) as url:
        more = f"    url: {url}\n    trace: {TRACE}\n    trace_speed: {SPEED}\n"
        campaign = serve_campaign("endpoint", "[{rate_rps: 4}, {concurrency: 3}]", 10, server=more)
        result_dir, server = run_server_campaign(tmp_path, campaign, ["r4", "c3", "trace"])
        assert not server["launched_by_lem"] and server["endpoint"] == url
        assert server["command"] == [] and server["pid"] is None and server["log_file"] is None
        assert server["served_model"] == str(resolve_model("builtin:tiny-llama"))
        assert server["gpus"] == [] and server["launch_energy_j"] is None  # a CPU: none counted
        check_levels(result_dir, server, requests=10, completion_tokens=8, rate_rps=4)

        trace = read_trace(TRACE)
        level = server["levels"][2]
        assert not level["failed"] and level["requests_ok"] == len(trace)
        scheduled_rps = (len(trace) - 1) / (trace[-1].t_s / SPEED)  # its lag budget's base
        assert level["target_rate_rps"] == pytest.approx(scheduled_rps)
        rows = pq.read_table(result_dir / level["requests_file"]).to_pydict()
        assert rows["scheduled_s"] == pytest.approx([r.t_s / SPEED for r in trace])
        assert rows["max_tokens"] == [r.output_tokens for r in trace]
        # transformers serve takes no ignore_eos: what it produced is recorded, never more
        produced = zip(rows["completion_tokens"], rows["max_tokens"], strict=True)
        assert all(0 < c <= m for c, m in produced)
        late = sorted(s - d for s, d in zip(rows["send_s"], rows["scheduled_s"], strict=True))
        assert late[0] >= 0  # never early; how late is a figure (benchmarks/RESULTS.md)
        print(
            f"trace send lateness ms: median {late[len(late) // 2] * 1e3:.2f}, max "
            f"{late[-1] * 1e3:.2f} over {len(late)} requests"
        )

        report = run_lem("report", result_dir.parents[1], cwd=tmp_path)
        assert report.returncode == 0, explain(report)
        assert (result_dir.parents[1] / "report" / "server_trace.png").is_file()
