"""Issue 14 robustness points through the real CLI and real tiny-model runs: a batch larger
than n_prompts, by-hand worker runs beside a finished result, configuration errors found before
anything runs and never retried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lem_cli import (
    explain,
    lem_env,
    load_manifest,
    only_campaign_dir,
    run_lem,
    tiny_campaign,
    write,
)

BATCH_GRID = "grid:\n  batch_size: [1, 2, 8]\n"


def test_batch_larger_than_n_prompts_is_refused_naming_it(tmp_path: Path) -> None:
    campaign = write(tmp_path / "c.yaml", tiny_campaign("b", tail=BATCH_GRID))
    proc = run_lem("campaign", campaign, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert "batch_size=8" in proc.stderr and "exceeds n_prompts 2" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_skip_invalid_leaves_the_oversized_batch_out_and_group_by_names_what_it_pools(
    tmp_path: Path,
) -> None:
    text = tiny_campaign("b", tail=BATCH_GRID + "skip_invalid: true\n")
    proc = run_lem(
        "campaign", write(tmp_path / "c.yaml", text), "-o", tmp_path / "out", cwd=tmp_path
    )
    assert proc.returncode == 0, explain(proc)
    assert "batch_size=8" in proc.stderr and "exceeds n_prompts 2" in proc.stderr
    manifest = load_manifest(only_campaign_dir(tmp_path / "out"))
    assert sorted(e.label["batch_size"] for e in manifest.entries) == [1, 2]
    assert all(e.status == "done" for e in manifest.entries)
    assert [s.label for s in manifest.skipped] == [{"batch_size": 8}]
    # --group-by pools runs that differ in swept parameters it does not list: it says which.
    campaign_dir = only_campaign_dir(tmp_path / "out")
    proc = run_lem("results", campaign_dir, "--group-by", "seed", "--json", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    rows = json.loads(proc.stdout)["summary"]
    assert rows and all(r["varies_within"] == "batch_size" for r in rows)
    table = run_lem("results", campaign_dir, "--group-by", "seed", cwd=tmp_path)
    assert "(pools batch_size)" in table.stdout, explain(table)
    ungrouped = run_lem("results", campaign_dir, "--json", cwd=tmp_path)
    assert all(r["varies_within"] == "" for r in json.loads(ungrouped.stdout)["summary"])


@pytest.mark.parametrize(
    ("model", "expected"),
    [("./no-such-model", "no such directory"), ("./empty-model", "has no config.json")],
)
def test_bad_local_model_path_is_refused_before_anything_runs(
    tmp_path: Path, model: str, expected: str
) -> None:
    (tmp_path / "empty-model").mkdir()
    campaign = write(tmp_path / "c.yaml", tiny_campaign("m", model=model))
    proc = run_lem("campaign", campaign, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert expected in proc.stderr and model in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    # refused on the host: no campaign directory, so no worker start and nothing to retry
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_by_hand_worker_run_writes_beside_a_finished_result(tmp_path: Path) -> None:
    campaign = write(tmp_path / "c.yaml", tiny_campaign("w"))
    proc = run_lem("campaign", campaign, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    (entry,) = load_manifest(campaign_dir).entries
    exp = campaign_dir / entry.exp_path
    result = exp.parent / "result.json"
    before = result.read_bytes()

    def worker(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llenergymeasure.worker", *flags, str(exp)],
            cwd=tmp_path,
            env=lem_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    by_hand = worker()
    assert by_hand.returncode == 0, by_hand.stderr
    assert result.read_bytes() == before  # the finished result is untouched
    (beside,) = exp.parent.glob("rerun_*/result.json")
    assert f"This run writes to {beside.parent}" in by_hand.stderr
    forced = worker("--force")
    assert forced.returncode == 0, forced.stderr
    assert result.read_bytes() != before and not list(exp.parent.glob("rerun_*/rerun_*"))


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_lem_report_on_read_only_storage_is_one_clear_line(tmp_path: Path) -> None:
    campaign = write(tmp_path / "c.yaml", tiny_campaign("r"))
    assert run_lem("campaign", campaign, "-o", tmp_path / "out", cwd=tmp_path).returncode == 0
    campaign_dir = only_campaign_dir(tmp_path / "out")
    subprocess.run(["mount", "--bind", str(campaign_dir), str(campaign_dir)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(campaign_dir)], check=True)
        proc = run_lem("report", campaign_dir, cwd=tmp_path)
    finally:
        subprocess.run(["umount", str(campaign_dir)], check=True)
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert "the file system is read-only" in lines[-1], explain(proc)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_during_a_run_is_one_clear_line(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)], check=True)
    try:
        text = tiny_campaign("f", tail="grid:\n  seed: [1, 2, 3]\n")
        proc = run_lem("campaign", write(tmp_path / "c.yaml", text), "-o", disk, cwd=tmp_path)
        done = [e for e in load_manifest(only_campaign_dir(disk)).entries if e.status == "done"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "the disk is full" in proc.stderr.strip().splitlines()[-1], explain(proc)
    assert done  # what finished before the disk filled is kept
