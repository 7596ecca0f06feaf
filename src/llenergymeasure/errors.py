"""One exception tree for the whole tool.

Lower-layer errors (pydantic, yaml, OSError, subprocess, torch) are translated at each boundary
with ``raise ... from e`` so the CLI can print one clear message and pick the exit code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """A setting an error names as its remedy (runner local, allow_large): each face words it
    in its own terms (faces.py: `--runner local` for the CLI, `runner="local"` for the
    library), so no layer below a face writes a face's words."""

    key: str
    value: object = None


RUN_LOCALLY = Option("runner", "local")
"""The remedy when a container or scheduler runner cannot run here."""


class LemError(Exception):
    """Base of every error the tool raises on purpose. A message that names options holds
    {0}, {1}, ... where each face words them."""

    exit_code: int = 1

    def __init__(self, *args: object, options: tuple[Option, ...] = ()) -> None:
        super().__init__(*args)
        self.options = options

    def worded(self, word: Callable[[Option], str]) -> str:
        text = str(self.args[0]) if self.args else ""
        for i, option in enumerate(self.options):
            text = text.replace(f"{{{i}}}", word(option))
        return text

    def __str__(self) -> str:
        if not self.options:
            return super().__str__()
        from llenergymeasure.faces import cli_words

        return self.worded(cli_words)


class ConfigError(LemError):
    """Bad user input: a campaign/experiment file, a CLI value, a prompt file. Exit code 2."""

    exit_code = 2


class DispatchError(LemError):
    """The orchestrator could not start, track or collect an experiment."""


class PreflightError(DispatchError):
    """The machine is not ready for the chosen runner (no engine, image missing or stale).
    Nothing ran; the message names the fix. Exit code 2."""

    exit_code = 2


class BackendError(LemError):
    """An inference engine failed to load or generate."""


class ServerStoppedError(BackendError):
    """A `mode: server` experiment's server exited during a level: the experiment failed;
    `partial` is the result of the levels finished before it, if any (written, marked partial)."""

    def __init__(self, message: str, partial: object = None) -> None:
        super().__init__(message)
        self.partial = partial


class MeasurementError(LemError):
    """A measurement could not be taken or is not trustworthy."""


def printable(text: str, limit: int | None = None) -> str:
    """text safe to show on a terminal: control characters and lone surrogates escaped (a
    hostile file must not move the cursor or break the output's encoding), newlines kept,
    and cut to `limit` characters with an ellipsis."""
    shown = "\n".join(
        "".join(c if c.isprintable() else ascii(c)[1:-1] for c in line) for line in text.split("\n")
    )
    if limit is not None and len(shown) > limit:
        return shown[: limit - 1] + "…"
    return shown
