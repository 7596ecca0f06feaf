"""Secrets never reach a file or an output (issue 27.3): the one place that says what a secret
is. A value under a key or variable named like *TOKEN*, *SECRET*, *PASSWORD* or *KEY*, and the
value of each `extra_sbatch` flag (`--name=value`), is recorded and printed as REDACTED; the
job still gets the real value (read anew from the settings on resume, see `restore`)."""

from __future__ import annotations

import re
from typing import Any

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)
SECRET_LISTS = frozenset({"extra_sbatch"})
"""Lists of `--flag=value` words whose values are secrets (a flag's name is shown)."""
REDACTED = "<redacted>"


def _flag(word: str) -> str:
    return word.partition("=")[0]


def redact(data: Any) -> Any:
    """data (JSON-like) with every secret value replaced by REDACTED."""
    if isinstance(data, list):
        return [redact(v) for v in data]
    if not isinstance(data, dict):
        return data
    out: dict[Any, Any] = {}
    for key, value in data.items():
        if key in SECRET_LISTS and isinstance(value, list):
            out[key] = [f"{_flag(str(w))}={REDACTED}" if "=" in str(w) else w for w in value]
        elif isinstance(key, str) and SECRET_NAME.search(key) and isinstance(value, str):
            out[key] = REDACTED
        else:
            out[key] = redact(value)
    return out


def restore(recorded: Any, current: Any) -> Any:
    """A redacted record with each secret taken from `current` (the settings as they are
    now), matched by key (by flag for SECRET_LISTS); one `current` lacks is left out."""
    if not isinstance(recorded, dict):
        return recorded
    now = current if isinstance(current, dict) else {}
    out: dict[Any, Any] = {}
    for key, value in recorded.items():
        if value == REDACTED:
            if key in now:
                out[key] = now[key]
        elif key in SECRET_LISTS and isinstance(value, list):
            flags = {_flag(str(w)): w for w in now.get(key) or []}
            kept = (flags.get(_flag(w)) if REDACTED in w else w for w in value)
            out[key] = [w for w in kept if w is not None]
        else:
            out[key] = restore(value, now.get(key))
    return out
