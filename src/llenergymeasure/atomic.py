"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from llenergymeasure.faults import crashpoint


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write via a temp file in the same directory, fsync it, os.replace, then fsync the dir.
    The file gets `mode`, default 0o666 under the umask, as open() would (issue 27.10); the
    rename replaces a link at `path` instead of writing through it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            crashpoint(f"atomic.{path.name}.written")
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(mode if mode is not None else 0o666 & ~current_umask())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    crashpoint(f"atomic.{path.name}.replaced")
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
