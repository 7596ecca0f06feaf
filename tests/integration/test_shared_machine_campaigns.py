"""Issue 27, red-team, through the real CLI: a campaign folder tampered with between runs
(a cycle folder or worker.log turned into a link, a file where an experiment folder belongs,
tables lost to a full disk) and a campaign SIGKILLed while it waits for a held device, run
under umask 077: `lem resume` refuses to write through links, says what is wrong in one line,
writes the tables it lacks, and takes the killed campaign up; no file is readable by others."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
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

from llenergymeasure.orchestrator.gpu_locks import DeviceLocks

pytestmark = pytest.mark.integration

UMASK_077 = ["sh", "-c", 'umask 077 && exec "$@"', "sh"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-run campaign, copied by each test that tampers with it."""
    work = tmp_path_factory.mktemp("finished")
    write(work / "c.yaml", tiny_campaign("tamper"))
    proc = run_lem("campaign", "c.yaml", "-o", "out", cwd=work)
    assert proc.returncode == 0, explain(proc)
    return only_campaign_dir(work / "out")


def tampered(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the campaign whose one run must run again (result.json gone): (the campaign
    folder, its cycle folder)."""
    campaign = Path(shutil.copytree(finished, tmp_path / finished.name, symlinks=True))
    cycle = campaign / load_manifest(campaign).entries[0].exp_path
    (cycle.parent / "result.json").unlink()
    return campaign, cycle.parent


@pytest.mark.parametrize("plant", ["cycle folder link", "worker.log link", "file for folder"])
def test_resume_never_writes_through_a_planted_link(
    finished: Path, tmp_path: Path, plant: str
) -> None:
    campaign, cycle = tampered(finished, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if plant == "cycle folder link":
        shutil.rmtree(cycle)
        cycle.symlink_to(elsewhere)
        said = f"{cycle} is a symbolic link"
    elif plant == "worker.log link":
        (cycle / "worker.log").unlink()
        (cycle / "worker.log").symlink_to(elsewhere / "victim.log")
        said = f"{cycle / 'worker.log'} is a symbolic link"
    else:
        shutil.rmtree(cycle.parent)
        cycle.parent.write_text("not a folder")
        said = f"{cycle.parent} is not a folder"
    proc = run_lem("resume", campaign, cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and said in errors[0] and "Traceback" not in proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_resume_writes_the_tables_a_full_disk_kept_from_being_written(
    finished: Path, tmp_path: Path
) -> None:
    campaign = Path(shutil.copytree(finished, tmp_path / finished.name))
    for table in ("results.csv", "results.parquet", "summary.csv", "summary.parquet"):
        (campaign / table).unlink()
    (campaign / ".results.parquet.tmp").write_bytes(b"torn")
    proc = run_lem("resume", campaign, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "1 done, 0 failed" in proc.stdout, explain(proc)
    names = {p.name for p in campaign.iterdir()}
    assert {"results.csv", "results.parquet", "summary.csv", "summary.parquet"} <= names
    assert ".results.parquet.tmp" not in names


def test_a_campaign_killed_while_waiting_for_a_device_is_resumed(tmp_path: Path) -> None:
    locks = {"LEM_GPU_LOCK_DIR": str(tmp_path / "locks")}
    write(tmp_path / "c.yaml", tiny_campaign("waiter"))
    log = tmp_path / "waiter.log"
    with DeviceLocks(["cpu"], "holder", notice=print, directory=tmp_path / "locks"):
        with log.open("w") as out:
            waiter = subprocess.Popen(
                [*UMASK_077, *lem_cmd("campaign", "c.yaml", "-o", "out")],
                cwd=tmp_path, env=lem_env() | locks, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + CLI_TIMEOUT_S
            while "waiting for the CPU" not in log.read_text():
                assert waiter.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            os.killpg(waiter.pid, signal.SIGKILL)
            waiter.wait(timeout=30)
    campaign = only_campaign_dir(tmp_path / "out")
    proc = subprocess.run(
        [*UMASK_077, *lem_cmd("resume", campaign)],
        cwd=tmp_path, env=lem_env() | locks, capture_output=True, text=True,
        timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    assert "1 done, 0 failed" in proc.stdout, explain(proc)
    # issue 27.10: under umask 077, nothing the campaign wrote is readable by others
    shared = {
        str(p.relative_to(campaign)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in campaign.rglob("*")
        if p.is_file() and p.stat().st_mode & 0o077
    }
    assert shared == {}
