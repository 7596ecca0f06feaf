"""Host-wide device locks with real concurrent campaigns: a campaign that needs a device held
by another waits (saying so) or, with --no-wait-for-gpus, is refused; a device held by a
campaign that crashes is free at once. GPU indices are the campaigns' --gpus: the lock is
host-side, so this CPU host can stand two GPUs in; without --gpus it locks the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lem_cli import (
    CLI_TIMEOUT_S,
    HANG_IN_GENERATE,
    explain,
    lem_cmd,
    lem_env,
    run_lem,
    tiny_campaign,
    write,
)

pytestmark = pytest.mark.integration

HolderStarter = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def locks(tmp_path: Path) -> dict[str, str]:
    return {"LEM_GPU_LOCK_DIR": str(tmp_path / "locks")}


@pytest.fixture
def holder(tmp_path: Path, locks: dict[str, str]) -> Iterator[HolderStarter]:
    """Start a campaign whose worker hangs in generate, so it holds its devices; SIGKILLed
    with its whole process group (a crash) at the end of the test at the latest."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> subprocess.Popen[bytes]:
        campaign = write(tmp_path / "holder.yaml", tiny_campaign("holder"))
        proc = subprocess.Popen(
            lem_cmd("campaign", campaign, "-o", tmp_path / "out-holder", *flags),
            cwd=tmp_path,
            env=lem_env() | locks | HANG_IN_GENERATE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        crash(proc)


def crash(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not path.exists():
        assert proc.poll() is None, f"the holder ended ({proc.returncode}) before locking"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_held_gpu_refuses_or_waits_and_a_crash_frees_it(
    tmp_path: Path, locks: dict[str, str], holder: HolderStarter
) -> None:
    first = holder("--gpus", "0")
    wait_for_file(tmp_path / "locks" / "gpu0.json", first)
    other = write(tmp_path / "other.yaml", tiny_campaign("other"))

    # Another GPU: runs beside it, untouched by the lock.
    proc = run_lem("campaign", other, "-o", tmp_path / "out", "--gpus", "1",
                   "--no-wait-for-gpus", cwd=tmp_path, env=locks)  # fmt: skip
    assert proc.returncode == 0, explain(proc)

    # The held GPU, not waiting: refused at once, one line naming the holder; nothing ran.
    proc = run_lem("campaign", other, "-o", tmp_path / "refused", "--gpus", "0",
                   "--no-wait-for-gpus", cwd=tmp_path, env=locks)  # fmt: skip
    assert proc.returncode == 2, explain(proc)
    assert "GPU 0 is in use by campaign holder_" in proc.stderr, explain(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, explain(proc)
    assert "was removed" in proc.stderr, explain(proc)
    assert not list((tmp_path / "refused").iterdir())  # no empty campaign left to resume

    # The held GPU, waiting (the default): says so, and runs once the holder crashes.
    with (tmp_path / "waiter.log").open("w") as log:
        waiter = subprocess.Popen(
            lem_cmd("campaign", other, "-o", tmp_path / "waited", "--gpus", "0"),
            cwd=tmp_path, env=lem_env() | locks, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "waiting for GPU 0" not in (tmp_path / "waiter.log").read_text():
                assert waiter.poll() is None, (tmp_path / "waiter.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "waiter.log").read_text()
                time.sleep(0.1)
            assert "in use by campaign holder_" in (tmp_path / "waiter.log").read_text()
            crash(first)  # SIGKILL: the kernel frees its flock
            assert waiter.wait(timeout=CLI_TIMEOUT_S) == 0, (tmp_path / "waiter.log").read_text()
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
    said = (tmp_path / "waiter.log").read_text()
    assert "got GPU 0 after" in said and "1 done, 0 failed" in said, said


def test_without_gpus_the_cpu_is_the_locked_device(
    tmp_path: Path, locks: dict[str, str], holder: HolderStarter
) -> None:
    first = holder()
    wait_for_file(tmp_path / "locks" / "cpu.json", first)
    other = write(tmp_path / "other.yaml", tiny_campaign("other"))
    proc = run_lem("campaign", other, "-o", tmp_path / "refused", "--no-wait-for-gpus",
                   cwd=tmp_path, env=locks)  # fmt: skip
    assert proc.returncode == 2, explain(proc)
    assert "the CPU (no GPU on this host) is in use by campaign holder_" in proc.stderr
    crash(first)
    proc = run_lem("campaign", other, "-o", tmp_path / "after", "--no-wait-for-gpus",
                   cwd=tmp_path, env=locks)  # fmt: skip
    assert proc.returncode == 0, explain(proc)
