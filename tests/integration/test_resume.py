"""`lem resume` with real processes: the orchestrator is SIGKILLed mid-campaign, its worker dies
with it, and resume finishes the campaign running every experiment exactly once to `done`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import (
    CLI_TIMEOUT_S,
    HANG_IN_GENERATE,
    entry_files,
    explain,
    lem_cmd,
    lem_env,
    load_manifest,
    only_campaign_dir,
    process_env,
    run_lem,
    tiny_base,
    tiny_campaign,
    wait_for_running_worker,
    wait_until_no_process_mentions,
    write,
)

from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.orchestrator.manifest import Manifest
from llenergymeasure.results.schema import ExperimentResult

pytestmark = pytest.mark.integration

SMALL_BASE = "cycles: 1\n" + tiny_base()

# Four experiments of a few seconds each (most of it the worker importing torch).
KILL_CAMPAIGN = tiny_campaign("killed", max_output_tokens=32, tail="grid:\n  seed: [1, 2, 3, 4]\n")


def _snapshot(campaign_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under the campaign: mtime and content."""
    return {
        str(p.relative_to(campaign_dir)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(campaign_dir.rglob("*"))
        if p.is_file()
    }


def _keys(rows: list[str]) -> set[tuple[str, int]]:
    """Dry-run rows 'pytorch-abc cycle 1 (seed=2)' -> {('pytorch-abc', 1)}."""
    keys = set()
    for row in rows:
        experiment_id, _, rest = row.partition(" cycle ")
        keys.add((experiment_id, int(rest.split()[0])))
    return keys


def _not_done(manifest: Manifest) -> set[tuple[str, int]]:
    return {(e.experiment_id, e.cycle) for e in manifest.entries if e.status != "done"}


@pytest.mark.parametrize("fork_server", ["1", "0"], ids=["forked", "spawned"])
def test_sigkilled_campaign_resumes_each_experiment_exactly_once(
    tmp_path: Path, fork_server: str
) -> None:
    campaign_file = write(tmp_path / "killed.yaml", KILL_CAMPAIGN)
    out_root = tmp_path / "out"
    with (tmp_path / "orchestrator.out").open("wb") as log:
        orchestrator = subprocess.Popen(
            lem_cmd("campaign", campaign_file, "-o", out_root),
            cwd=tmp_path,
            env=lem_env() | {"LEM_FORK_SERVER": fork_server},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            campaign_dir, seen, interrupted, worker_pid = wait_for_running_worker(
                orchestrator, out_root
            )
            if fork_server == "0":
                # The campaign context reaches the worker through its environment (a forked
                # worker sets it after the fork: /proc shows the server's, read at exec).
                env = process_env(worker_pid)
                assert env["LEM_CAMPAIGN_ID"] == seen.campaign_id == campaign_dir.name
                assert env["LEM_EXPERIMENT_ID"] == interrupted.experiment_id
                assert env["LEM_CYCLE"] == "1"
                assert env["LEM_TOTAL_CYCLES"] == "1"
                assert env["LEM_PARENT_PID"] == str(orchestrator.pid)
                assert env["HF_HUB_OFFLINE"] == "1"

            os.kill(orchestrator.pid, signal.SIGKILL)  # the orchestrator only, not its group
            assert orchestrator.wait(timeout=30) == -signal.SIGKILL
        finally:
            if orchestrator.poll() is None:
                orchestrator.kill()
                orchestrator.wait()

    # PR_SET_PDEATHSIG: the worker dies with its orchestrator, at once. An orphan would run on
    # for seconds (still alive here) or finish and leave its result.json (checked below).
    assert wait_until_no_process_mentions(campaign_dir, within_s=5.0) == []

    after_kill = load_manifest(campaign_dir)
    by_key = {e.key: e for e in after_kill.entries}
    assert by_key[interrupted.key].status == "running"  # nobody was left to update it
    interrupted_dir = campaign_dir / Path(interrupted.exp_path).parent
    assert not (interrupted_dir / "result.json").exists()
    assert "measured window" not in (interrupted_dir / "worker.log").read_text()
    done_before = [e for e in after_kill.entries if e.status == "done"]
    assert done_before
    assert all(e.attempts == 1 for e in done_before)
    done_files = {e.key: entry_files(campaign_dir, e) for e in done_before}
    to_finish = _not_done(after_kill)
    assert len(to_finish) == 4 - len(done_before)

    # --dry-run lists exactly what is not done and changes nothing.
    before_dry_run = _snapshot(campaign_dir)
    proc = run_lem("resume", campaign_dir, "--dry-run", "--json", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    listed = json.loads(proc.stdout)["experiments"]
    assert len(listed) == len(to_finish)
    assert _keys(listed) == to_finish
    assert _snapshot(campaign_dir) == before_dry_run

    proc = run_lem("resume", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert str(campaign_dir) in proc.stderr, explain(proc)

    final = load_manifest(campaign_dir)
    assert [e.key for e in final.entries] == [e.key for e in after_kill.entries]
    assert all(e.status == "done" for e in final.entries), [
        (e.key, e.status) for e in final.entries
    ]
    final_by_key = {e.key: e for e in final.entries}
    # finished work is not redone: same files, same bytes, same mtimes, one attempt
    for entry in done_before:
        assert final_by_key[entry.key].attempts == 1
        assert entry_files(campaign_dir, entry) == done_files[entry.key]
    # the killed experiment ran once more, to completion
    rerun = final_by_key[interrupted.key]
    assert rerun.attempts == 2
    assert sorted(p.name for p in interrupted_dir.glob("*.json")) == ["exp.json", "result.json"]
    assert not list(interrupted_dir.glob(".*.tmp"))
    result = ExperimentResult.model_validate_json((interrupted_dir / "result.json").read_bytes())
    assert result.attempt == 2
    assert result.output_tokens == 2 * 32
    spec = ExperimentSpec.model_validate_json((interrupted_dir / "exp.json").read_bytes())
    assert spec.attempt == 2
    # the ones that never started ran exactly once
    for key in to_finish - {(interrupted.experiment_id, interrupted.cycle)}:
        entry = final_by_key[f"{key[0]}/cycle-{key[1]}"]
        assert entry.attempts == 1
        assert (
            ExperimentResult.model_validate_json(
                (campaign_dir / str(entry.result_path)).read_bytes()
            ).attempt
            == 1
        )

    frame = pd.read_csv(campaign_dir / "results.csv")
    assert len(frame) == 4
    assert sorted(zip(frame["experiment_id"], frame["cycle"], strict=True)) == sorted(
        (e.experiment_id, e.cycle) for e in final.entries
    )
    assert set(frame["status"]) == {"done"}
    attempts = dict(zip(frame["experiment_id"], frame["attempts"], strict=True))
    assert attempts == {e.experiment_id: e.attempts for e in final.entries}


def test_finished_campaign_and_crash_after_result_write(tmp_path: Path) -> None:
    campaign_file = write(tmp_path / "done.yaml", "name: finished\n" + SMALL_BASE)
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    (entry,) = load_manifest(campaign_dir).entries
    assert (entry.status, entry.attempts) == ("done", 1)
    files = entry_files(campaign_dir, entry)

    # Resuming a finished campaign: nothing to do, nothing touched.
    before = _snapshot(campaign_dir)
    proc = run_lem("resume", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "nothing to resume" in proc.stderr, explain(proc)
    assert _snapshot(campaign_dir) == before

    # A crash after the worker wrote result.json but before the manifest said `done`: the
    # manifest still holds the `running` state saved before the worker started.
    manifest_path = campaign_dir / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["entries"][0] |= {"status": "running", "result_path": None, "finished_at": None}
    manifest_path.write_text(json.dumps(data, indent=1))

    proc = run_lem("resume", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "recovered" in proc.stdout, explain(proc)
    (recovered,) = load_manifest(campaign_dir).entries
    assert recovered.status == "done"
    assert recovered.attempts == 1  # not run again
    assert recovered.result_path == entry.result_path
    assert recovered.finished_at is not None
    # result.json, exp.json and worker.log untouched: no worker started
    assert entry_files(campaign_dir, entry) == files
    frame = pd.read_csv(campaign_dir / "results.csv")
    assert list(frame["status"]) == ["done"]
    assert frame["output_tokens"][0] == 2 * 4


def test_resume_a_moved_campaign_directory(tmp_path: Path) -> None:
    """Results land in the campaign directory where it is now, not where it was created."""
    campaign_file = write(tmp_path / "moved.yaml", "name: moved\n" + SMALL_BASE)
    proc = run_lem(
        "campaign", campaign_file, "-o", tmp_path / "first", "--timeout", "0.5",
        cwd=tmp_path, env=HANG_IN_GENERATE,
    )  # fmt: skip
    assert proc.returncode == 1, explain(proc)
    created = only_campaign_dir(tmp_path / "first")
    moved = tmp_path / "second" / created.name
    moved.parent.mkdir()
    created.rename(moved)

    # a failed run is not rerun unasked
    proc = run_lem("resume", moved, cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    assert f"to run them again: lem resume --retry-failed {moved}" in proc.stderr, explain(proc)
    proc = run_lem("resume", "--retry-failed", "--timeout", "600", moved, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    (entry,) = load_manifest(moved).entries
    assert (entry.status, entry.attempts) == ("done", 2)
    exp_dir = moved / Path(entry.exp_path).parent
    assert ExperimentResult.model_validate_json((exp_dir / "result.json").read_bytes()).attempt == 2
    spec = ExperimentSpec.model_validate_json((exp_dir / "exp.json").read_bytes())
    assert spec.output_dir == str(exp_dir)
    assert spec.cache_dir == str(moved.resolve() / ".cache")  # the cache moved too
    assert not created.exists()  # nothing was written to the old location


def test_resume_without_argument_picks_newest_unfinished(tmp_path: Path) -> None:
    """With no argument `lem resume` looks in ./results for the newest unfinished campaign."""
    dirs = {}
    for name, seed in (("older", 1), ("newer", 2)):
        campaign_file = write(
            tmp_path / f"{name}.yaml", f"name: {name}\n{SMALL_BASE}  seed: {seed}\n"
        )
        # --timeout makes this attempt fail; it is recorded, so each resume below overrides it
        proc = run_lem(
            "campaign", campaign_file, "--timeout", "0.5", cwd=tmp_path, env=HANG_IN_GENERATE
        )
        assert proc.returncode == 1, explain(proc)
        (dirs[name],) = (tmp_path / "results").glob(f"{name}_*")
    older_manifest = (dirs["older"] / "manifest.json").read_bytes()
    newer_ids = {e.experiment_id for e in load_manifest(dirs["newer"]).entries}
    older_ids = {e.experiment_id for e in load_manifest(dirs["older"]).entries}
    assert newer_ids.isdisjoint(older_ids)

    # both only failed: nothing is unfinished unless failures count
    proc = run_lem("resume", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "Nothing to resume" in proc.stderr, explain(proc)
    proc = run_lem("resume", "--retry-failed", "--dry-run", "--json", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert {k[0] for k in _keys(json.loads(proc.stdout)["experiments"])} == newer_ids

    resume_args = ("resume", "--retry-failed", "--timeout", "600", "--runner", "local")
    proc = run_lem(*resume_args, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert f"Resuming {dirs['newer'].resolve()}" in proc.stderr, explain(proc)
    newer = load_manifest(dirs["newer"])
    assert [(e.status, e.attempts) for e in newer.entries] == [("done", 2)]
    record = newer.execution.settings  # a flag given to resume overrides, and says so
    assert record is not None
    assert (record.runner, record.sources["runner"]) == ("local", "lem resume --runner")
    assert (dirs["older"] / "manifest.json").read_bytes() == older_manifest

    # next time, the older one is the newest unfinished
    proc = run_lem(*resume_args, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert f"Resuming {dirs['older'].resolve()}" in proc.stderr, explain(proc)
    older = load_manifest(dirs["older"])
    assert [(e.status, e.attempts) for e in older.entries] == [("done", 2)]

    proc = run_lem("resume", "--retry-failed", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "Nothing to resume" in proc.stderr, explain(proc)


def test_a_second_orchestrator_on_the_same_campaign_is_refused(tmp_path: Path) -> None:
    campaign_file = write(tmp_path / "busy.yaml", KILL_CAMPAIGN.replace("killed", "busy"))
    out_root = tmp_path / "out"
    with (tmp_path / "orchestrator.out").open("wb") as log:
        first = subprocess.Popen(
            lem_cmd("campaign", campaign_file, "-o", out_root),
            cwd=tmp_path,
            env=lem_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            campaign_dir, *_ = wait_for_running_worker(first, out_root)
            proc = run_lem("resume", campaign_dir, cwd=tmp_path)
            assert proc.returncode == 2, explain(proc)
            assert (
                f"error: {campaign_dir} is being run by pid {first.pid} on host "
                f"{socket.gethostname()} (since " in proc.stderr
            ), explain(proc)
            assert "Traceback" not in proc.stderr
            assert first.wait(timeout=CLI_TIMEOUT_S) == 0
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    # the refused one started nothing: every experiment ran once, by the first
    final = load_manifest(campaign_dir)
    assert [(e.status, e.attempts) for e in final.entries] == [("done", 1)] * 4
    assert not (campaign_dir / "lem.lock").exists()


def test_resume_keeps_each_recorded_setting_and_its_source(tmp_path: Path) -> None:
    """Settings from every source (flag, campaign file, environment, .lem-config.yaml) are
    resolved once when the campaign is created; a resume after SIGKILL under another
    environment and another .lem-config.yaml continues with the same values and sources."""
    settings_file = write(
        tmp_path / ".lem-config.yaml", "runner: local\npue: 1.3\ngaps: {between_cycles_s: 0}\n"
    )
    campaign_file = write(
        tmp_path / "sources.yaml",
        KILL_CAMPAIGN.replace("name: killed", "name: sources")
        + "gaps: {between_experiments_s: 0.1}\n",
    )
    created_env = {"LEM_CARBON_INTENSITY_G_PER_KWH": "100", "LEM_GAP_BETWEEN_CYCLES_S": "0"}
    out_root = tmp_path / "out"
    with (tmp_path / "orchestrator.out").open("wb") as log:
        orchestrator = subprocess.Popen(
            lem_cmd("campaign", campaign_file, "-o", "out", "--runner", "local"),
            cwd=tmp_path,
            env=lem_env() | created_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            campaign_dir, *_ = wait_for_running_worker(orchestrator, out_root)
            os.kill(orchestrator.pid, signal.SIGKILL)
            orchestrator.wait(timeout=30)
        finally:
            if orchestrator.poll() is None:
                orchestrator.kill()
                orchestrator.wait()
    assert wait_until_no_process_mentions(campaign_dir, within_s=5.0) == []
    expected = {
        "runner": ("local", "--runner"),
        "results_dir": ("out", "--output-dir"),
        "pue": (1.3, str(settings_file)),
        "carbon_intensity_g_per_kwh": (100.0, "environment (LEM_CARBON_INTENSITY_G_PER_KWH)"),
    }
    expected_gaps = {
        "between_experiments_s": (0.1, "campaign file"),
        "between_cycles_s": (0.0, "environment (LEM_GAP_BETWEEN_CYCLES_S)"),
    }

    def recorded(manifest: Manifest) -> tuple[dict[str, object], dict[str, object]]:
        record = manifest.execution.settings
        assert record is not None
        values = {k: (getattr(record, k), record.sources.get(k)) for k in expected}
        gaps = {
            k: (getattr(manifest.execution.gaps, k), record.sources.get(f"gaps.{k}"))
            for k in expected_gaps
        }
        return values, gaps

    assert recorded(load_manifest(campaign_dir)) == (expected, expected_gaps)

    # Another machine state: every source now says something else.
    write(settings_file, "runner: docker\npue: 2.0\ngaps: {between_experiments_s: 7}\n")
    resumed_env = {
        "LEM_RUNNER": "docker-persistent",
        "LEM_OUTPUT_DIR": "elsewhere",
        "LEM_CARBON_INTENSITY_G_PER_KWH": "500",
        "LEM_GAP_BETWEEN_CYCLES_S": "9",
    }
    proc = run_lem("resume", campaign_dir, cwd=tmp_path, env=resumed_env)
    assert proc.returncode == 0, explain(proc)
    assert "runner local" in proc.stderr, explain(proc)
    manifest = load_manifest(campaign_dir)
    assert recorded(manifest) == (expected, expected_gaps)
    assert {(e.status, e.runner) for e in manifest.entries} == {("done", "local")}
    runs = pd.read_csv(campaign_dir / "results.csv")
    assert set(runs["status"]) == {"done"}
