"""Recovery once a campaign file goes wrong, through the real CLI on the tiny model: a damaged
manifest.json is one line pointing at `lem repair`, which rebuilds it from the result files
and the journal; a deleted result.json of a finished run is run again by `lem resume`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lem_cli import (
    CLI_TIMEOUT_S,
    explain,
    lem_cmd,
    lem_env,
    load_manifest,
    only_campaign_dir,
    run_lem,
    tiny_campaign,
    write,
)

from llenergymeasure.orchestrator.manifest import Manifest

pytestmark = pytest.mark.integration

# One experiment, three cycles: cycle 2's worker runs out of memory (error.json, not retried)
# and the orchestrator is SIGKILLed once cycle 3 is marked running, before its worker starts.
CRASHED = tiny_campaign("crashed", cycles=3, tail="order: grouped\n")
FAULTS = "worker.generate:1:oom@LEM_CYCLE=2,campaign.after_start_save:3"


@pytest.fixture(scope="module")
def crashed_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A campaign left by a killed orchestrator: manifest.json (all pending), its journal
    (cycle 1 done, 2 oom, 3 running) and the files of each cycle."""
    root = tmp_path_factory.mktemp("crashed")
    write(root / ".lem-config.yaml", "gaps: {between_experiments_s: 0, between_cycles_s: 0}\n")
    campaign_file = write(root / "c.yaml", CRASHED)
    proc = subprocess.run(
        lem_cmd("campaign", campaign_file, "-o", root / "out", "--runner", "local"),
        cwd=root,
        env=lem_env() | {"LEM_CRASHPOINT": FAULTS},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == -9, explain(proc)
    campaign_dir = only_campaign_dir(root / "out")
    assert [e.status for e in load_manifest(campaign_dir).entries] == ["done", "oom", "running"]
    assert (campaign_dir / "manifest.journal").is_file()
    return campaign_dir


def _copy(campaign_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out" / campaign_dir.name
    shutil.copytree(campaign_dir, copy)
    return copy


def _state(manifest: Manifest) -> list[tuple[str, int, str, int]]:
    return [(e.experiment_id, e.cycle, e.status, e.attempts) for e in manifest.entries]


@pytest.mark.parametrize(
    "damage",
    ["garbage manifest", "truncated manifest, journal lost"],
)
def test_lem_repair_rebuilds_a_damaged_manifest_and_resume_finishes(
    crashed_campaign: Path, tmp_path: Path, damage: str
) -> None:
    campaign_dir = _copy(crashed_campaign, tmp_path)
    manifest_path = campaign_dir / "manifest.json"
    original = manifest_path.read_bytes()
    if damage.startswith("garbage"):
        manifest_path.write_bytes(b"\x00\xffnot json at all" * 50)
    else:
        manifest_path.write_bytes(original[: len(original) // 2])
    if "journal lost" in damage:
        (campaign_dir / "manifest.journal").unlink()

    # Every command that reads the campaign: one line naming the fix, exit 2.
    for command in (["results", campaign_dir], ["resume", campaign_dir]):
        proc = run_lem(*command, cwd=tmp_path)
        assert proc.returncode == 2, explain(proc)
        assert f"lem repair {campaign_dir}" in proc.stderr, explain(proc)
        assert len(proc.stderr.strip().splitlines()) == 1, explain(proc)
        assert "validation error" not in proc.stderr and "Traceback" not in proc.stderr
    # Bare `lem resume` too: the only candidate is damaged, so it names it, never "nothing to
    # resume" (issue 28.2).
    for flags in ([], ["--dry-run"]):
        proc = run_lem("resume", "--results-dir", tmp_path / "out", *flags, cwd=tmp_path)
        assert proc.returncode == 2, explain(proc)
        assert f"lem repair {campaign_dir}" in proc.stderr and "Nothing" not in proc.stderr

    proc = run_lem("repair", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "Rebuilt" in proc.stdout and "1 done" in proc.stdout, explain(proc)
    assert "Could not recover:" in proc.stdout, explain(proc)
    if damage.startswith("garbage"):  # the head of a truncated file keeps the settings
        assert "from manifest.journal: 3 entries" in proc.stdout, explain(proc)
        assert "the user settings it ran with" in proc.stdout, explain(proc)
    else:
        assert "from result.json/error.json/exp.json files: 3 entries" in proc.stdout
    assert f"lem resume {campaign_dir}" in proc.stdout, explain(proc)
    assert list(campaign_dir.glob("manifest.json.damaged-*"))  # kept, never deleted

    rebuilt = load_manifest(campaign_dir)
    experiment_id = rebuilt.entries[0].experiment_id
    assert _state(rebuilt) == [
        (experiment_id, 1, "done", 1),
        (experiment_id, 2, "oom", 1),
        (experiment_id, 3, "interrupted", 1),  # its orchestrator died: a lost attempt
    ]
    assert rebuilt.campaign_id == campaign_dir.name
    assert rebuilt.entries[0].result_path == f"{experiment_id}/cycle-1/result.json"
    assert "out of memory" in (rebuilt.entries[1].error or "").lower()

    # A readable manifest is left alone.
    proc = run_lem("repair", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0 and "nothing to repair" in proc.stdout, explain(proc)

    # Beside a readable unfinished campaign, a damaged one is named and the other one chosen.
    beside = shutil.copytree(campaign_dir, tmp_path / "out" / "beside_20000101T000000Z")
    (beside / "manifest.json").write_bytes(b"garbage")
    proc = run_lem("resume", "--results-dir", tmp_path / "out", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and "Would run (1)" in proc.stdout, explain(proc)
    assert f"lem repair {beside}" in proc.stderr, explain(proc)
    shutil.rmtree(beside)

    # The rebuilt campaign resumes: cycle 3 runs; cycle 1 is not redone, the oom stays.
    result_1 = (campaign_dir / rebuilt.entries[0].result_path).read_bytes()
    proc = run_lem("resume", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)  # 1: one experiment failed (the oom)
    final = load_manifest(campaign_dir)
    assert _state(final) == [
        (experiment_id, 1, "done", 1),
        (experiment_id, 2, "oom", 1),
        (experiment_id, 3, "done", 2),
    ]
    assert (campaign_dir / rebuilt.entries[0].result_path).read_bytes() == result_1


def test_deleted_result_of_a_finished_campaign_is_rerun_by_resume(tmp_path: Path) -> None:
    campaign_file = write(tmp_path / "c.yaml", tiny_campaign("deleted", cycles=2))
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    first, second = load_manifest(campaign_dir).entries
    assert second.result_path is not None
    (campaign_dir / second.result_path).unlink()

    proc = run_lem("resume", "--dry-run", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "Would run (1)" in proc.stdout, explain(proc)
    assert f"{second.experiment_id} cycle 2" in proc.stdout, explain(proc)
    assert "result.json missing" in proc.stdout, explain(proc)

    # No argument: the newest campaign with something to run is this one.
    proc = run_lem("resume", "--results-dir", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "result.json is missing: it runs again" in proc.stdout + proc.stderr, explain(proc)
    after = load_manifest(campaign_dir)
    assert [(e.cycle, e.status, e.attempts) for e in after.entries] == [
        (1, "done", 1),
        (2, "done", 2),
    ]
    assert (campaign_dir / second.result_path).is_file()
    assert after.entries[0].finished_at == first.finished_at  # cycle 1 untouched
    assert [a.status for a in after.entries[1].attempt_history] == ["done", "lost", "done"]

    proc = run_lem("resume", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0 and "nothing to resume" in proc.stderr, explain(proc)
