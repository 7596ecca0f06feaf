"""When each experiment cycle runs: the order of the set within and across cycles, and the gap
waited before each one. Pure functions of the recorded Execution, so `lem resume` follows the
same rules as the run it continues."""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from llenergymeasure.config.campaign import CampaignConfig, Execution, Gaps
from llenergymeasure.config.choices import Order
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.errors import ConfigError, Option
from llenergymeasure.orchestrator.manifest import ManifestEntry


def resolve_execution(config: CampaignConfig, settings: UserSettings) -> Execution:
    """The effective execution, from the campaign file and settings already resolved against
    it (config.settings.resolve_settings: gaps included). A shuffled campaign without
    order_seed gets a random one, recorded so the order can be reproduced."""
    seed = config.order_seed
    if config.order == "shuffled" and seed is None:
        seed = secrets.randbelow(2**32)
    return Execution(
        order=config.order,
        order_seed=seed,
        gaps=settings.gaps,
        thermal_floor_c=config.thermal_floor_c,
        thermal_floor_max_wait_s=config.thermal_floor_max_wait_s,
        statistics=config.statistics,
        settings=settings.record(),
    )


def run_order(
    n_experiments: int, cycles: int, order: Order, seed: int | None
) -> list[tuple[int, int]]:
    """(experiment index, cycle) pairs in the order they run."""
    if order == "grouped":
        return [(i, c) for i in range(n_experiments) for c in range(1, cycles + 1)]
    pairs: list[tuple[int, int]] = []
    for cycle in range(1, cycles + 1):
        indices = list(range(n_experiments))
        if order == "shuffled":
            # One generator per cycle, from the seed and the cycle number alone: the order of
            # cycle N never depends on how many cycles there are.
            random.Random(f"{seed}:{cycle}").shuffle(indices)
        pairs.extend((i, cycle) for i in indices)
    return pairs


@dataclass(frozen=True)
class Gap:
    seconds: float
    reason: str


def gap_between(
    previous: ManifestEntry | None, entry: ManifestEntry, order: Order, gaps: Gaps
) -> Gap:
    """The wait before `entry` when `previous` ran last on the same device(s)."""
    if previous is None:
        return Gap(0.0, "")
    if starts_cycle(previous, entry, order):
        return Gap(gaps.between_cycles_s, "between cycles")
    return Gap(gaps.between_experiments_s, "between experiments")


def starts_cycle(previous: ManifestEntry, entry: ManifestEntry, order: Order) -> bool:
    """interleaved/shuffled: a new pass over the set; grouped: a repeat of one experiment."""
    if order == "grouped":
        return previous.experiment_id == entry.experiment_id
    return previous.cycle != entry.cycle


def needs_barrier(previous: ManifestEntry | None, entry: ManifestEntry, order: Order) -> bool:
    """A new pass over the set (interleaved/shuffled) starts only when the last one has ended,
    also when experiments run side by side on several GPUs."""
    return previous is not None and order != "grouped" and previous.cycle != entry.cycle


def effective_gaps(gaps: Gaps, fresh_container_per_run: bool) -> Gaps:
    """No gaps where each run gets a fresh container and the user opted in to skip them."""
    if fresh_container_per_run and gaps.skip_in_fresh_containers:
        return gaps.model_copy(update={"between_experiments_s": 0.0, "between_cycles_s": 0.0})
    return gaps


def parse_gpus(text: str) -> tuple[int, ...]:
    """'0,1,3' -> (0, 1, 3): the GPU indices (nvidia-smi order) experiments may be pinned to."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p.isdigit() for p in parts):
        raise ConfigError(
            f"--gpus {text!r}: expected GPU indices separated by commas, e.g. --gpus 0,1,2,3"
        )
    gpus = tuple(int(p) for p in parts)
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus {text!r} lists a GPU twice")
    return gpus


def check_gpu_needs(needs: Sequence[tuple[str, int]], gpus: tuple[int, ...]) -> None:
    """Fail before anything runs if an experiment needs more GPUs than it may use."""
    for experiment_id, need in needs:
        if need > len(gpus):
            raise ConfigError(
                f"experiment {experiment_id} needs {need} GPUs but {{0}} lists "
                f"{len(gpus)} ({', '.join(map(str, gpus))})",
                options=(Option("gpus"),),
            )
