"""Host-wide device locks: two campaigns never measure on one GPU at the same time.

Two campaigns on the same GPU read each other's energy. Each device a campaign runs on on
this host has a lock file in a host-wide directory (LEM_GPU_LOCK_DIR, default
/tmp/lem-gpu-locks: /tmp, not $XDG_RUNTIME_DIR, because a campaign of another user must be
seen too); the campaign holds an flock(2) on each for its whole run, so the kernel frees them
when it ends however it ends (clean exit, Ctrl+C, SIGKILL, a crash). A second campaign that
needs a held device waits for it, saying so and who holds it, or with wait=False
(`--no-wait-for-gpus`) is refused at once.

Which devices: the GPU indices the campaign is pinned to (--gpus); unpinned, every GPU of the
host (CUDA_VISIBLE_DEVICES, else /dev/nvidia<N>: the host never loads NVML); on a host without
GPUs, the one device "cpu" (concurrent CPU campaigns skew each other's latency and RAPL
energy just the same). Runners that run elsewhere (a batch scheduler's nodes) lock nothing here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from llenergymeasure.errors import DispatchError, Option
from llenergymeasure.faces import cli_words
from llenergymeasure.orchestrator.manifest import utcnow

LOCK_DIR_ENV = "LEM_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/tmp/lem-gpu-locks")
WAIT_NOTICE_EVERY_S = 60.0
POLL_S = 0.2
NO_WAIT = Option("wait_for_gpus", False)


class DeviceBusyError(DispatchError):
    """A device the campaign needs is held by another campaign, and waiting was not
    allowed. Nothing ran. Exit code 2."""

    exit_code = 2


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def host_devices(gpus: Sequence[int] | None, dev: Path = Path("/dev")) -> list[str]:
    """The devices a campaign uses on this host (see the module docstring)."""
    if gpus:
        return [f"gpu{i}" for i in sorted(set(gpus))]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in {"", "-1"}:
        tokens = [t.strip() for t in visible.split(",") if t.strip()]
        return [f"gpu{t}" if t.isdigit() else f"gpu-{_safe(t)}" for t in tokens]
    nodes = sorted(
        int(m.group(1))
        for p in (dev.glob("nvidia*") if dev.is_dir() else [])
        if (m := re.fullmatch(r"nvidia(\d+)", p.name))
    )
    return [f"gpu{i}" for i in nodes] or ["cpu"]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:80]


def _describe(device: str) -> str:
    return f"GPU {device[3:]}" if device.startswith("gpu") else "the CPU (no GPU on this host)"


class DeviceLocks:
    """Held while a campaign runs (a context manager): every device it uses, or none."""

    def __init__(
        self,
        devices: Sequence[str],
        campaign: str,
        *,
        wait: bool = True,
        notice: Callable[[str], None],
        directory: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.devices, self.campaign, self.wait = list(devices), campaign, wait
        self.notice, self.clock = notice, clock
        self.directory = directory or lock_dir()
        self._held: list[FileLock] = []

    def __enter__(self) -> DeviceLocks:
        try:
            self._prepare_directory()
            for device in self.devices:  # a fixed order: two campaigns never deadlock
                self._held.append(self._take(device))
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def release(self) -> None:
        while self._held:
            lock = self._held.pop()
            with contextlib.suppress(OSError):
                Path(lock.lock_file).with_suffix(".json").unlink()
            lock.release()

    def _prepare_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Shared by every user of the host, like /tmp itself (sticky, world-writable).
            if self.directory.stat().st_uid == os.getuid():
                self.directory.chmod(0o1777)
        except OSError as e:
            raise DispatchError(
                f"cannot use the GPU lock directory {self.directory}: {e}; set "
                f"{LOCK_DIR_ENV} to a directory every lem user of this host can write"
            ) from e

    def _take(self, device: str) -> FileLock:
        path = self.directory / f"{device}.lock"
        lock = FileLock(
            path,
            mode=0o666,
            thread_local=False,
            fallback_to_soft=False,  # a soft lock would outlive a killed holder
            preserve_lock_file=True,  # unlinking a flock'd file lets a third process in
        )
        what = _describe(device)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = _holder(path)
            if not self.wait:
                raise DeviceBusyError(
                    f"{what} is in use by {holder}; wait for it to end, or pass {{0}} to wait "
                    "for it",
                    options=(Option("wait_for_gpus", True),),
                ) from None
            self._wait_for(lock, what, holder)
        except OSError as e:
            raise DispatchError(f"cannot lock {what} ({path}): {e}") from e
        _write_holder(path, self.campaign)
        return lock

    def _wait_for(self, lock: FileLock, what: str, holder: str) -> None:
        start = self.clock()
        self.notice(
            f"waiting for {what}: in use by {holder} (Ctrl+C stops; {cli_words(NO_WAIT)} refuses "
            "instead of waiting)"
        )
        next_notice = start + WAIT_NOTICE_EVERY_S
        while True:
            try:
                lock.acquire(timeout=POLL_S)
            except Timeout:
                if self.clock() >= next_notice:
                    next_notice += WAIT_NOTICE_EVERY_S
                    self.notice(
                        f"still waiting for {what} after {self.clock() - start:.0f} s: in use "
                        f"by {_holder(lock.lock_file)}"
                    )
                continue
            self.notice(f"got {what} after {self.clock() - start:.0f} s of waiting")
            return


def _write_holder(path: Path, campaign: str) -> None:
    data = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "campaign": campaign,
        "since": utcnow().isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        path.with_suffix(".json").write_text(json.dumps(data))


def _holder(lock_path: str | os.PathLike[str]) -> str:
    try:
        data = json.loads(Path(lock_path).with_suffix(".json").read_text())
        return f"campaign {data['campaign']} (pid {data['pid']}, since {data['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def no_locks() -> Iterator[None]:
    yield
