"""One orchestrator per campaign directory: `<campaign>/lem.lock`.

Two orchestrators on one campaign would run the same experiments twice and overwrite each
other's manifest. The lock is an flock(2) held on `lem.lock` for the whole run, so the kernel
frees it the moment its holder dies, however it dies; the file's content (pid, host, start
time) names the holder in the refusal message and judges a lock left behind:

- held (flock busy): refuse, naming the holder;
- left by a process of this host that is gone: take it over, with a notice;
- left by another host (a campaign directory on shared storage, where flock may not reach
  across machines): refuse, since only a person can tell whether that process still runs,
  and say how to override (`--force-unlock`);
- empty or torn (a crash while it was written): take it over, with a notice.

On a clean stop the holder removes the file (before closing it, so that a process waiting on
the old file sees it is no longer the lock and retries).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from llenergymeasure.errors import DispatchError, Option
from llenergymeasure.faces import cli_words
from llenergymeasure.faults import crashpoint
from llenergymeasure.orchestrator.manifest import utcnow
from llenergymeasure.orchestrator.names import LOCK_FILE

FORCE = Option("force_unlock", True)


class CampaignLockedError(DispatchError):
    """Another orchestrator holds (or may hold) the campaign. Nothing ran. Exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started_at: str
    pid_start: str | None
    """The process's start time in clock ticks since boot (/proc): a reused pid differs."""

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(pid, socket.gethostname(), utcnow().isoformat(), _process_start(pid))

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (since {self.started_at})"

    def alive(self) -> bool:
        """This host only: the process still runs (and is the one that took the lock)."""
        if Path("/proc").is_dir():
            start = _process_start(self.pid)
            return start is not None and self.pid_start in {None, start}
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class CampaignLock:
    """Held while an orchestrator runs a campaign directory (a context manager)."""

    def __init__(
        self, campaign_dir: Path, *, force: bool = False, notice: Callable[[str], None]
    ) -> None:
        self.path = campaign_dir / LOCK_FILE
        self.force, self.notice = force, notice
        self._fd: int | None = None

    def __enter__(self) -> CampaignLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(20):  # retried only when a holder released the file meanwhile
            try:
                fd, created = _open(self.path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise DispatchError(f"cannot create the campaign lock {self.path}: {e}") from e
            try:
                if self._take(fd, created):
                    self._fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise DispatchError(f"could not take the campaign lock {self.path}: it keeps changing")

    def _take(self, fd: int, created: bool) -> bool:
        """Lock fd and write this process into it; False: fd is not the lock file anymore."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(self.path)
            who = holder.describe() if holder else "another process"
            raise CampaignLockedError(
                f"{self.path.parent} is being run by {who}; wait for it to end or stop it "
                "(Ctrl+C) before running it here"
            ) from None
        try:
            if os.fstat(fd).st_ino != self.path.stat().st_ino:
                return False
        except FileNotFoundError:
            return False
        previous = _read(self.path)
        if previous is not None:
            self._judge(previous)
        elif not created:  # left empty or half written: its holder died while writing it
            self.notice(f"took over {self.path}: it was torn (a crash while it was written)")
        data = json.dumps(asdict(Holder.me()), indent=1).encode()
        os.ftruncate(fd, 0)
        crashpoint("lock.truncated")
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        return True

    def _judge(self, previous: Holder) -> None:
        """A lock file whose flock was free: say why it may be taken over, or refuse."""
        here = socket.gethostname()
        if previous.host != here:
            if not self.force:
                raise CampaignLockedError(
                    f"{self.path.parent} is locked by {previous.describe()}, another machine; "
                    "lem cannot see from here whether that process still runs. If it does not, "
                    "run the same command with {0}",
                    options=(FORCE,),
                )
            self.notice(f"took over the lock of {previous.describe()} ({cli_words(FORCE)})")
        elif previous.alive() and previous.pid != os.getpid():
            # flock was free yet the holder lives: a filesystem where flock does not work
            if not self.force:
                raise CampaignLockedError(
                    f"{self.path.parent} is locked by {previous.describe()}, which is still "
                    "running; stop it first (or, if it is not running lem, use {0})",
                    options=(FORCE,),
                )
            self.notice(f"took over the lock of {previous.describe()} ({cli_words(FORCE)})")
        else:
            self.notice(
                f"took over a stale lock: {previous.describe()} is no longer running "
                "(it was killed or crashed)"
            )

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_ino == self.path.stat().st_ino:
                self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _open(path: Path) -> tuple[int, bool]:
    """The lock file's descriptor, and whether this call created it."""
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        return os.open(path, flags), False


def read_holder(campaign_dir: Path) -> Holder | None:
    """Who holds (or last held) the campaign's lock; None without a readable lock file."""
    return _read(campaign_dir / LOCK_FILE)


def _read(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_bytes())
        return Holder(
            pid=int(data["pid"]),
            host=str(data["host"]),
            started_at=str(data["started_at"]),
            pid_start=None if data.get("pid_start") is None else str(data["pid_start"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _process_start(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time since boot); None where there is no such
    process, it is a zombie, or there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:
        return None
    return fields[19]
