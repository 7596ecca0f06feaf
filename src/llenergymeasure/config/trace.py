"""A request trace (`server.trace`): one JSON object a line, `t_s` (send offset, sorted, >= 0),
`input_tokens` (or `prompt` text) and `output_tokens`. Read whole and checked before anything
runs (host pre-flight) and again by the worker; every problem names the file and its line."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

from llenergymeasure.errors import ConfigError, printable

MAX_TRACE_BYTES = 64 * 2**20
"""About a million requests; a public day-long serving trace is a few MB."""
LIMIT = 1_000_000
"""Largest token count or offset (s) a line may give."""
EXPECTED = 'expected {"t_s": 0.5, "input_tokens": 128, "output_tokens": 64} (or "prompt": text)'


@dataclass(frozen=True)
class TraceRequest:
    t_s: float
    output_tokens: int
    input_tokens: int | None = None
    prompt: str | None = None


def trace_path(trace: str, base_dir: Path) -> Path:
    """Relative paths are relative to the campaign file, as prompt files are."""
    path = Path(trace).expanduser()
    return path if path.is_absolute() else base_dir / path


def read_trace(path: Path) -> list[TraceRequest]:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"trace {path} is not a regular file; {EXPECTED}")
        if info.st_size > MAX_TRACE_BYTES:
            raise ConfigError(f"trace {path}: {info.st_size:,} bytes > {MAX_TRACE_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"trace not found: {path}") from e
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"cannot read trace {path}: {printable(str(e))}") from e
    out: list[TraceRequest] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            out.append(_request(line, f"{path}, line {lineno}", out[-1].t_s if out else 0.0))
    if not out:
        raise ConfigError(f"{path}: the trace holds no request; {EXPECTED}")
    return out


def _request(line: str, where: str, previous_s: float) -> TraceRequest:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: invalid JSON ({e.msg}); {EXPECTED}") from e
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: not a JSON object; {EXPECTED}")
    extra = set(obj) - {"t_s", "input_tokens", "prompt", "output_tokens"}
    if extra:
        raise ConfigError(f"{where}: unknown key {printable(sorted(extra)[0], 40)!r}; {EXPECTED}")
    t = obj.get("t_s")
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= LIMIT:
        raise ConfigError(f"{where}: t_s must be seconds in [0, {LIMIT}], got {_shown(t)}")
    if t < previous_s:
        raise ConfigError(f"{where}: t_s {t} is before the line above's {previous_s}; sort by t_s")
    for key in ("output_tokens", "input_tokens"):
        n = obj.get(key)
        if (key == "output_tokens" or n is not None) and not _count(n):
            raise ConfigError(f"{where}: {key} must be an integer in [1, {LIMIT}], got {_shown(n)}")
    prompt = obj.get("prompt")
    if (prompt is None) == (obj.get("input_tokens") is None):
        raise ConfigError(f"{where}: give exactly one of input_tokens or prompt; {EXPECTED}")
    if prompt is not None and not (isinstance(prompt, str) and prompt.strip()):
        raise ConfigError(f"{where}: prompt must be non-empty text")
    return TraceRequest(float(t), obj["output_tokens"], obj.get("input_tokens"), prompt)


def _count(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= LIMIT


def _shown(value: object) -> str:
    return printable(repr(value), 40)
