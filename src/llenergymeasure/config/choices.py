"""Choices the CLI offers as option types, in a module that imports nothing: `lem --help`
builds its options from these without loading pydantic models."""

from typing import Literal

Order = Literal["interleaved", "shuffled", "grouped"]
RunnerChoice = Literal["auto", "local", "docker", "docker-persistent", "slurm"]
"""auto: docker when the engine answers and the images exist, else local (with a notice)."""
