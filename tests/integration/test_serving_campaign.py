"""Server mode end to end through `lem campaign`: the PyTorch path (`transformers serve
--continuous-batching`) with the built-in model on the CPU, two levels (open loop at 4 rps,
closed loop at 3 in flight) against one server launch; Ctrl+C during its launch; `lem
resume` after a SIGKILL between experiments; and the server SIGKILLed mid-level."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import (
    entry_files,
    explain,
    lem_cmd,
    lem_env,
    load_manifest,
    only_campaign_dir,
    processes_mentioning,
    run_lem,
    wait_for_running_worker,
    write,
)
from serving_checks import (
    check_levels,
    check_server_gone,
    run_server_campaign,
    serve_campaign,
)

from llenergymeasure.models import resolve_model
from llenergymeasure.orchestrator.manifest import to_resume

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "transformers")),
    reason="needs the serve extra (fastapi, uvicorn) and transformers",
)

CAMPAIGN = serve_campaign("serve", "[{rate_rps: 4}, {concurrency: 3}]", requests=10)


@pytest.mark.timeout(600)
def test_server_campaign_levels_are_rows_with_ordered_requests(tmp_path: Path) -> None:
    result_dir, server = run_server_campaign(tmp_path, CAMPAIGN, ["r4", "c3"])
    assert server["launch_s"] > 0 and server["launch_energy_j"] is None  # no GPU energy here
    check_levels(result_dir, server, requests=10, completion_tokens=8, rate_rps=4)
    summary = pd.read_csv(result_dir.parents[1] / "summary.csv")
    assert set(summary["level"]) == {"r4", "c3"} and "achieved_rate_rps" in set(summary["metric"])


@pytest.mark.timeout(300)
def test_ctrl_c_during_server_launch_leaves_no_process_or_port(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        lem_cmd("campaign", write(tmp_path / "serve.yaml", CAMPAIGN), "--yes"),
        cwd=tmp_path,
        env=lem_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (servers := _my_servers()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl+C sends the orchestrator
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    mine = [p for p in servers if Path(f"/proc/{p}").exists()]
    assert not mine, f"server processes left: {mine}"


def _my_servers() -> list[int]:
    """Live `transformers serve` processes on this checkout's built-in model (no other run's)."""
    model = resolve_model("builtin:tiny-llama").encode()
    return [
        p
        for p in processes_mentioning("serve\0--continuous-batching")
        if model in Path(f"/proc/{p}/cmdline").read_bytes()
    ]


RESUME_CAMPAIGN = serve_campaign(
    "resumed", "[{rate_rps: 8}, {concurrency: 2}]", requests=4, tail="grid:\n  seed: [1, 2]\n"
)


@pytest.mark.timeout(600)
def test_sigkilled_server_campaign_resumes_at_experiment_granularity(tmp_path: Path) -> None:
    """SIGKILL of the orchestrator while the second experiment's worker runs: its server dies
    with it; `lem resume` runs only that experiment again and keeps the first one's level rows."""
    out_root = tmp_path / "out"
    command = lem_cmd("campaign", write(tmp_path / "r.yaml", RESUME_CAMPAIGN), "-o", out_root)
    with (tmp_path / "orchestrator.out").open("wb") as log:
        orchestrator = subprocess.Popen(
            command, cwd=tmp_path, env=lem_env(), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            campaign_dir, _, interrupted, _ = wait_for_running_worker(
                orchestrator, out_root, within_s=400
            )
            os.kill(orchestrator.pid, signal.SIGKILL)
            assert orchestrator.wait(timeout=30) == -signal.SIGKILL
        finally:
            if orchestrator.poll() is None:
                orchestrator.kill()
                orchestrator.wait()
    deadline = time.monotonic() + 30
    while _my_servers():  # the worker's death stops its server (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, f"server processes left: {_my_servers()}"
        time.sleep(0.2)

    (done,) = [e for e in load_manifest(campaign_dir).entries if e.status == "done"]
    done_files = entry_files(campaign_dir, done)
    done_levels = json.loads(done_files["result.json"][1])["server"]["levels"]

    proc = run_lem("resume", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    final = {e.key: e for e in load_manifest(campaign_dir).entries}
    assert {e.status for e in final.values()} == {"done"} and len(final) == 2
    assert final[done.key].attempts == 1 and final[interrupted.key].attempts == 2
    assert entry_files(campaign_dir, done) == done_files  # not run again: same bytes, mtimes
    rows = pd.read_csv(campaign_dir / "results.csv")
    assert sorted(zip(rows["experiment_id"], rows["level"], strict=True)) == sorted(
        (e.experiment_id, level) for e in final.values() for level in ("r8", "c2")
    )
    assert set(rows["status"]) == {"done"}
    # the finished experiment's rows are its levels as measured before the kill
    kept = rows[rows["experiment_id"] == done.experiment_id]
    assert set(kept["attempts"]) == {1}
    columns = ["level", "achieved_rate_rps", "ttft_p99_s", "window_s", "requests_ok"]
    assert kept[columns].to_dict("records") == [{c: lv[c] for c in columns} for lv in done_levels]
    for entry in final.values():
        result = json.loads((campaign_dir / str(entry.result_path)).read_text())
        assert [lv["requests_ok"] for lv in result["server"]["levels"]] == [4, 4]
        check_server_gone(result["server"])
    assert not _my_servers()


KILL_CAMPAIGN = serve_campaign("killed", "[{rate_rps: 8}, {concurrency: 1}]", requests=40)


@pytest.mark.timeout(600)
def test_a_server_killed_mid_level_fails_the_experiment_and_keeps_the_level_before(
    tmp_path: Path,
) -> None:
    """SIGKILL of the real server as its second level starts (issue 25.1): exit 1, the first
    level's result kept (partial), the cut level failed in results.csv, `lem results` and the
    manifest, `lem resume --retry-failed` would run it again, and nothing is left behind."""
    proc = subprocess.Popen(
        lem_cmd("campaign", write(tmp_path / "kill.yaml", KILL_CAMPAIGN), "--yes"),
        cwd=tmp_path,
        env=lem_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 400
    while not list((tmp_path / "results").glob("*/*/cycle-1/requests-r8.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
        time.sleep(0.05)
    for pid in _my_servers():  # the second level (40 requests one at a time) has begun
        os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    directory = only_campaign_dir(tmp_path / "results")
    rows = pd.read_csv(directory / "results.csv")
    assert list(rows["level"]) == ["r8", "c1"] and list(rows["status"]) == ["done", "failed"]
    assert rows["requests_ok"][0] == 40
    cut = "server was killed by signal 9 during level c1 after "
    assert cut in rows["error"][1], rows["error"][1]
    (entry,) = load_manifest(directory).entries
    assert entry.status == "failed" and cut in (entry.error or ""), entry.error
    assert to_resume(directory, load_manifest(directory), retry_failed=True) == [entry]
    result_path = directory / Path(entry.exp_path).parent / "result.json"
    result = json.loads(result_path.read_text())
    assert result["partial"] is True and (result_path.parent / "requests-c1.parquet").is_file()
    shown = run_lem("results", directory, cwd=tmp_path)
    assert "0 done, 1 failed" in shown.stdout and "failed level c1 of " in shown.stdout, explain(
        shown
    )
    check_server_gone(result["server"])
    assert not _my_servers()
