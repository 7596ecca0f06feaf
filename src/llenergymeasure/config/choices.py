"""The choices a flag offers, as plain Literals: the CLI builds its options from them at start,
before (and without) loading pydantic and the config models."""

from typing import Literal

Order = Literal["interleaved", "shuffled", "grouped"]

RunnerChoice = Literal["auto", "local", "docker", "docker-persistent"]
"""auto: docker when the engine answers and the images exist, else local (with a notice)."""
