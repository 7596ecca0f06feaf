"""The campaign lock with real files and real processes: held, stale, torn, another host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llenergymeasure.orchestrator.lock import (
    CampaignLock,
    CampaignLockedError,
    Holder,
    read_holder,
)
from llenergymeasure.orchestrator.names import LOCK_FILE

HOLD = """
import sys, time
from pathlib import Path
from llenergymeasure.orchestrator.lock import CampaignLock
with CampaignLock(Path(sys.argv[1]), notice=print):
    print("locked", flush=True)
    time.sleep(600)
"""


class Notices(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of tmp_path."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _write_lock(directory: Path, **fields: object) -> None:
    data = {
        "pid": 1,
        "host": socket.gethostname(),
        "started_at": "2025-01-02T03:04:05+00:00",
        "pid_start": None,
    }
    (directory / LOCK_FILE).write_text(json.dumps(data | fields))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_names_its_holder_and_is_removed_on_release(tmp_path: Path) -> None:
    notices = Notices()
    with CampaignLock(tmp_path, notice=notices):
        holder = read_holder(tmp_path)
        assert holder is not None
        assert (holder.pid, holder.host) == (os.getpid(), socket.gethostname())
        assert holder.pid_start is not None  # Linux: /proc
        assert holder.alive()
    assert not (tmp_path / LOCK_FILE).exists()
    assert notices == []


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with CampaignLock(tmp_path, notice=Notices()), pytest.raises(CampaignLockedError) as info:
        CampaignLock(tmp_path, notice=Notices()).acquire()
    message = str(info.value)
    assert f"is being run by pid {os.getpid()} on host {socket.gethostname()}" in message
    assert info.value.exit_code == 2


def test_a_lock_held_by_another_process_is_refused_naming_it(
    tmp_path: Path, holder_process: subprocess.Popen[str]
) -> None:
    with pytest.raises(CampaignLockedError) as info:
        CampaignLock(tmp_path, notice=Notices()).acquire()
    assert f"pid {holder_process.pid} on host {socket.gethostname()}" in str(info.value)
    # the holder's lock is intact
    holder = read_holder(tmp_path)
    assert holder is not None and holder.pid == holder_process.pid


def test_the_lock_of_a_killed_process_is_taken_over_with_a_notice(
    tmp_path: Path, holder_process: subprocess.Popen[str]
) -> None:
    holder_process.kill()
    holder_process.wait()
    assert (tmp_path / LOCK_FILE).exists()  # SIGKILL: left behind
    notices = Notices()
    with CampaignLock(tmp_path, notice=notices):
        holder = read_holder(tmp_path)
        assert holder is not None and holder.pid == os.getpid()
    (notice,) = notices
    assert notice.startswith(f"took over a stale lock: pid {holder_process.pid} on host ")
    assert notice.endswith("is no longer running (it was killed or crashed)")


def test_a_dead_pid_in_the_file_is_stale(tmp_path: Path) -> None:
    pid = _dead_pid()
    _write_lock(tmp_path, pid=pid)
    notices = Notices()
    with CampaignLock(tmp_path, notice=notices):
        pass
    assert len(notices) == 1 and f"pid {pid}" in notices[0]


def test_a_live_pid_with_a_free_flock_is_refused(tmp_path: Path) -> None:
    """Where flock does not work (some network filesystems) the file alone must protect: a
    holder process that still runs (same pid and start time) is not taken over."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        start = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        assert Holder(sleeper.pid, socket.gethostname(), "", start).alive()
        _write_lock(tmp_path, pid=sleeper.pid, pid_start=start)
        with pytest.raises(CampaignLockedError) as info:
            CampaignLock(tmp_path, notice=Notices()).acquire()
        assert f"pid {sleeper.pid}" in str(info.value)
        assert "still running" in str(info.value)
        # the same pid with another start time is a reused pid: stale
        _write_lock(tmp_path, pid=sleeper.pid, pid_start="1")
        notices = Notices()
        with CampaignLock(tmp_path, notice=notices):
            pass
        assert "no longer running" in notices[0]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_another_hosts_lock_needs_force_unlock(tmp_path: Path) -> None:
    _write_lock(tmp_path, pid=os.getpid(), host="gpu-node-7")
    with pytest.raises(CampaignLockedError) as info:
        CampaignLock(tmp_path, notice=Notices()).acquire()
    message = str(info.value)
    assert f"locked by pid {os.getpid()} on host gpu-node-7" in message
    assert "run the same command with --force-unlock" in message
    assert (tmp_path / LOCK_FILE).exists()  # untouched

    notices = Notices()
    with CampaignLock(tmp_path, force=True, notice=notices):
        holder = read_holder(tmp_path)
        assert holder is not None and holder.host == socket.gethostname()
    assert notices == [
        f"took over the lock of pid {os.getpid()} on host gpu-node-7 "
        "(since 2025-01-02T03:04:05+00:00) (--force-unlock)"
    ]


@pytest.mark.parametrize("content", ['{"pid": 12', ""], ids=["torn", "empty"])
def test_a_torn_or_empty_lock_file_is_taken_over(tmp_path: Path, content: str) -> None:
    (tmp_path / LOCK_FILE).write_text(content)
    notices = Notices()
    with CampaignLock(tmp_path, notice=notices):
        assert read_holder(tmp_path) is not None
    expected = f"took over {tmp_path / LOCK_FILE}: it was torn (a crash while it was written)"
    assert notices == [expected]


def test_release_before_close_lets_a_waiting_process_retry(tmp_path: Path) -> None:
    """Taking the lock right after another holder released it (its file unlinked) works and
    leaves exactly one lock file."""
    for _ in range(3):
        with CampaignLock(tmp_path, notice=Notices()):
            time.sleep(0.01)
    with CampaignLock(tmp_path, notice=Notices()):
        assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]
