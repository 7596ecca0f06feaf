"""Storage faults (read-only file system, full disk, no permission) said in one line at the CLI
boundary instead of a traceback (issue 14 point 7)."""

from __future__ import annotations

import errno

_WHAT = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def storage_message(error: OSError) -> str | None:
    """One line for a storage fault; None for any other OSError (a bug: let it show)."""
    what = _WHAT.get(error.errno or 0)
    if what is None:
        return None
    where = f" writing {error.filename}" if error.filename else ""
    return f"cannot write{where}: {what}; nothing already recorded was changed"
