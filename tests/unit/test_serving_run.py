"""A server-mode experiment's levels end to end against a launched stand-in server process (no
model): level energy and per-request attribution from injected GPU readings (no NVML here),
failed levels with their reasons, and nothing left behind."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from serving_standin import StandIn, standin_server

from llenergymeasure.config.server import ServerSpec
from llenergymeasure.errors import BackendError, ServerStoppedError
from llenergymeasure.results.serving_plots import trace_figure
from llenergymeasure.worker.serving.experiment import _quality
from llenergymeasure.worker.serving.run import Load, ServerRun, Trace, run_server_experiment
from llenergymeasure.worker.serving.server import free_port

STANDIN = Path(__file__).with_name("serving_standin.py")
WATTS = 200.0


class SteadyGpu:
    """An energy counter that reads WATTS on the real clock (what NVML would count)."""

    uuid = "GPU-injected"

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.pids = {4242}

    def energy_mj(self) -> int:
        return int((time.monotonic() - self.t0) * WATTS * 1000)

    def compute_pids(self) -> set[int]:
        return self.pids


def _run(tmp_path: Path, levels: list[dict[str, object]], *standin_args: str, **spec: object):
    port = free_port()
    cmd = [
        sys.executable,
        str(STANDIN),
        str(port),
        "--tokens",
        "6",
        "--gap-s",
        "0.02",
        *standin_args,
    ]
    server = ServerSpec.model_validate(
        {"levels": levels, "requests_per_level": 20, "arrival": "constant", "cooldown_s": 0}
        | {"warmup_requests": 1, "startup_timeout_s": 30}
        | spec
    )
    load = Load("", "standin", ["a prompt", "another prompt"], 6)
    run = run_server_experiment(server, cmd, port, load, tmp_path, [SteadyGpu()], baseline_s=0.5)
    return run, port


def test_level_energy_and_per_request_shares_add_up(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, [{"rate_rps": 20}, {"concurrency": 4}])
    assert run.record.idle_power_w == pytest.approx(WATTS, rel=0.05)
    assert run.record.launch_energy_j == pytest.approx(WATTS * run.record.launch_s, rel=0.05)
    for level in run.record.levels:
        assert not level.failed and level.requests_ok == 20
        assert level.energy_window_j == pytest.approx(WATTS * (level.window_s or 0), rel=0.05)
        assert level.attributed_energy_sum_j == pytest.approx(level.energy_window_j, rel=1e-9)
        table = pq.read_table(tmp_path / level.requests_file).to_pydict()
        shares = [e for e in table["energy_j"] if e is not None]
        assert sum(shares) == pytest.approx(level.energy_window_j, rel=1e-9)
        assert level.window_start_s is not None and level.window_end_s is not None
        assert min(table["send_s"]) <= level.window_start_s < level.window_end_s
        assert level.window_end_s <= max(table["end_s"])
    assert run.record.levels[0].achieved_rate_rps == pytest.approx(20, rel=0.10)
    assert run.record.launched_by_lem and run.record.gpu_processes[0].pids == [4242]


@pytest.mark.parametrize("how", ["--fail-after", "--exit-after", "--hang-after"])
def test_a_failing_level_keeps_the_other_levels_result(tmp_path: Path, how: str) -> None:
    # 1 warm-up + 20 requests answered, then every request fails (HTTP 500), or the server dies:
    # then the experiment fails (issue 25.1), carrying the run so far
    # (exits, or stops answering even /health: its requests cut at request_timeout_s)
    levels = [{"rate_rps": 40}, {"rate_rps": 40}]
    if how == "--fail-after":
        run, port = _run(tmp_path, levels, how, "21")
        reason = "20 of 20 requests failed (HTTP 500"
    else:
        with pytest.raises(ServerStoppedError) as caught:
            _run(tmp_path, levels, how, "21", request_timeout_s=1)
        assert isinstance(caught.value.partial, ServerRun)
        run, port = caught.value.partial, int(caught.value.partial.record.command[2])
        reason = {
            "--exit-after": "server exited with code 3 during level r40 after ",
            "--hang-after": "server stopped answering: server not healthy within 10 s (log: ",
        }[how]
    first, second = run.record.levels
    assert not first.failed and first.requests_ok == 20
    assert second.failed and second.requests_ok == 0
    assert second.failed_reason is not None and reason in second.failed_reason
    assert pq.read_table(tmp_path / second.requests_file).num_rows <= 20
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the stand-in server outlived the run"


def test_a_server_that_never_answers_health_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    server = ServerSpec.model_validate(
        {"levels": [{"rate_rps": 1}], "requests_per_level": 1, "startup_timeout_s": 1}
    )
    cmd = [sys.executable, "-c", "import time; time.sleep(60)", str(port)]
    with pytest.raises(BackendError, match="not healthy within startup_timeout_s=1 s"):
        run_server_experiment(server, cmd, port, Load("", "m", ["p"], 1), tmp_path)


def test_a_server_lem_did_not_start_is_measured_through_its_url_and_left_running(
    tmp_path: Path,
) -> None:
    """server.url with a level and a trace: nothing launched or stopped, the listed model
    requested, per-request shares adding up in both, and a GPU shared with another process
    flagged (injected readings: no NVML here)."""
    standin = StandIn(tokens=6, gap_s=0.02)
    gpu = SteadyGpu()
    gpu.pids = {4242, 5151}
    with standin_server(standin) as url:
        server = ServerSpec.model_validate(
            {"url": url, "trace": "t.jsonl", "levels": [{"rate_rps": 20}], "cooldown_s": 0}
            | {"requests_per_level": 20, "warmup_requests": 1, "arrival": "constant"}
        )
        load = Load("", "path/of/model", ["a prompt"], 6)
        load.trace = Trace([0.0, 0.05, 0.05, 0.3], ["p"] * 4, [2, 5, 3, 6])
        run = run_server_experiment(server, [], 0, load, tmp_path, [gpu], baseline_s=0.5)
        record = run.record
        assert standin.requests == 1 + 20 + 4  # warm-up, level, trace: still serving after
        assert not record.launched_by_lem and record.endpoint == url and record.pid is None
        assert record.served_model == "standin" and record.launch_energy_j is None
        assert record.idle_power_w == pytest.approx(WATTS, rel=0.05)
        assert [lv.level for lv in record.levels] == ["r20", "trace"]
        for level in record.levels:
            assert not level.failed and level.energy_window_j is not None
            assert level.attributed_energy_sum_j == pytest.approx(level.energy_window_j)
        rows = pq.read_table(tmp_path / record.levels[1].requests_file).to_pydict()
        assert rows["scheduled_s"] == [0.0, 0.05, 0.05, 0.3]
        assert rows["max_tokens"] == rows["completion_tokens"] == [2, 5, 3, 6]
        figure = trace_figure({"standin": pd.DataFrame(rows)})  # the report's trace figure
        assert [len(ax.lines[0].get_xdata()) for ax in figure.axes] == [4, 4]
        reasons = _quality(record, 1.0, True).reasons
        assert any("GPU-injected: 2 processes used the GPU (pid 4242, 5151)" in r for r in reasons)


def test_a_server_url_that_stops_answering_fails_the_experiment_and_is_not_stopped(
    tmp_path: Path,
) -> None:
    """Issue 25's rule for a server lem did not start: after a failed level, no answer on
    /v1/models (its health check) within 10 s ends the experiment, keeping the level before;
    the server's process is still there afterwards (lem never stops it)."""
    port = free_port()
    # 1 warm-up + 20 answered, then nothing at all (health included)
    cmd = [sys.executable, str(STANDIN), str(port), "--hang-after", "21"]
    standin = subprocess.Popen(cmd)
    try:
        server = ServerSpec.model_validate(
            {"url": f"http://127.0.0.1:{port}", "levels": [{"rate_rps": 40}] * 2}
            | {"requests_per_level": 20, "arrival": "constant", "cooldown_s": 0}
            | {"warmup_requests": 1, "request_timeout_s": 1, "startup_timeout_s": 30}
        )
        with pytest.raises(ServerStoppedError, match="server stopped answering") as caught:
            run_server_experiment(server, [], 0, Load("", "m", ["p"], 4), tmp_path)
        assert isinstance(caught.value.partial, ServerRun)
        first, second = caught.value.partial.record.levels
        assert not first.failed and first.requests_ok == 20 and second.failed
        assert standin.poll() is None, "lem stopped a server it did not start"
    finally:
        standin.kill()
        standin.wait(10)
