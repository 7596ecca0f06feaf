"""Files a campaign leaves behind are the invoking user's and not world-writable.

Ownership needs nothing here: local workers run as the user, and the docker runners run their
containers as the user's uid:gid (PUID/PGID in compose.yaml). Modes do: a permissive umask
(000, common in containers and shared accounts) would make every result, log and table
writable by anyone on the machine. So while lem writes, the umask also masks world-write;
worker processes inherit it. Group-write is left to the user's umask (shared-group setups).
Atomic writes (atomic.py) follow the umask, as open() does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

NO_WORLD_WRITE = 0o002


@contextlib.contextmanager
def no_world_write() -> Iterator[None]:
    """Add world-write to the process umask for the duration; the old umask comes back."""
    old = os.umask(NO_WORLD_WRITE)
    os.umask(old | NO_WORLD_WRITE)
    try:
        yield
    finally:
        os.umask(old)
