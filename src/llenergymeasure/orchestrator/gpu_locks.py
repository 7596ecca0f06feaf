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
energy just the same). Runners that run elsewhere (a batch scheduler's
nodes) lock nothing here.

The directory is shared with every user, so nothing in it is trusted (issue 27.1): it must be
a real directory that is the user's own, or sticky (no one can replace another's files);
files in it are opened with O_NOFOLLOW (a planted link is refused, never written through) and
the holder note is replaced by rename, never written into an existing file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from llenergymeasure.atomic import write_text_atomic
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
        self._held: list[tuple[Path, int]] = []

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
            path, fd = self._held.pop()
            with contextlib.suppress(OSError):
                path.with_suffix(".json").unlink()
            os.close(fd)  # closing the only descriptor frees the flock

    def _prepare_directory(self) -> None:
        problem = ""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            info = self.directory.lstat()
            if not stat.S_ISDIR(info.st_mode):
                problem = "it is not a directory (a link?)"
            elif info.st_uid == os.getuid():
                # Shared by every user of the host, like /tmp itself (sticky, world-writable).
                self.directory.chmod(0o1777)
            elif not info.st_mode & stat.S_ISVTX and info.st_mode & 0o022:
                problem = (
                    f"it belongs to uid {info.st_uid} and is writable by others without the "
                    "sticky bit, so anyone could replace the lock files"
                )
        except OSError as e:
            problem = str(e)
        if problem:
            raise DispatchError(
                f"cannot use the GPU lock directory {self.directory}: {problem}; set "
                f"{LOCK_DIR_ENV} to a directory every lem user of this host can write"
            )

    def _take(self, device: str) -> tuple[Path, int]:
        path = self.directory / f"{device}.lock"
        what = _describe(device)
        try:
            fd = _open_lock(path)
        except OSError as e:
            raise DispatchError(f"cannot lock {what} ({path}): {e}") from e
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DispatchError(f"cannot lock {what}: {path} is not a regular file")
            if info.st_uid == os.getuid():  # readable by other users' campaigns, whatever
                os.fchmod(fd, 0o644)  # the umask (flock needs only a read descriptor)
            if not _try_flock(fd):
                holder = _holder(path)
                if not self.wait:
                    raise DeviceBusyError(
                        f"{what} is in use by {holder}; wait for it to end, or pass {{0}} to "
                        "wait for it",
                        options=(Option("wait_for_gpus", True),),
                    )
                self._wait_for(path, fd, what, holder)
        except BaseException:
            os.close(fd)
            raise
        _write_holder(path, self.campaign)
        return path, fd

    def _wait_for(self, path: Path, fd: int, what: str, holder: str) -> None:
        start = self.clock()
        self.notice(
            f"waiting for {what}: in use by {holder} (Ctrl+C stops; {cli_words(NO_WAIT)} refuses "
            "instead of waiting)"
        )
        next_notice = start + WAIT_NOTICE_EVERY_S
        while not _try_flock(fd):
            time.sleep(POLL_S)
            if self.clock() >= next_notice:
                next_notice += WAIT_NOTICE_EVERY_S
                self.notice(
                    f"still waiting for {what} after {self.clock() - start:.0f} s: in use "
                    f"by {_holder(path)}"
                )
        self.notice(f"got {what} after {self.clock() - start:.0f} s of waiting")


def _open_lock(path: Path) -> int:
    """Read-only, no truncation, no link followed, no FIFO waited on; created only when
    missing (O_CREAT on another user's file in a sticky folder is refused where
    fs.protected_regular is set, as on most distributions)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):  # another campaign made it meanwhile
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
    return os.open(path, flags)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_holder(path: Path, campaign: str) -> None:
    data = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "campaign": campaign,
        "since": utcnow().isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):  # a temp file renamed over it: a link is replaced
        write_text_atomic(path.with_suffix(".json"), json.dumps(data), mode=0o644)


def _holder(lock_path: Path) -> str:
    try:
        fd = os.open(lock_path.with_suffix(".json"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd) as f:
            data = json.loads(f.read(4096))
        return f"campaign {data['campaign']} (pid {data['pid']}, since {data['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def no_locks() -> Iterator[None]:
    yield
