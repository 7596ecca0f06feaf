"""How a detached campaign is cut into Slurm job arrays: one per stretch the dispatcher would
let overlap (a cycle under interleaved/shuffled, all of it under grouped), and no array past
Slurm's MaxArraySize."""

from __future__ import annotations

import pytest

from llenergymeasure.orchestrator.detach import _chunks, _stretches
from llenergymeasure.orchestrator.manifest import ManifestEntry


def entries(pairs: list[tuple[str, int]]) -> list[ManifestEntry]:
    return [
        ManifestEntry(
            experiment_id=e, cycle=c, backend="pytorch", runner="slurm",
            exp_path=f"{e}/cycle-{c}/exp.json",
        )
        for e, c in pairs
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("order", "pairs", "expected"),
    [
        ("interleaved", [("a", 1), ("b", 1), ("a", 2), ("b", 2)], [[0, 1], [2, 3]]),
        ("shuffled", [("b", 1), ("a", 1), ("a", 2), ("b", 2)], [[0, 1], [2, 3]]),
        ("grouped", [("a", 1), ("a", 2), ("b", 1), ("b", 2)], [[0, 1, 2, 3]]),
    ],
)
def test_one_array_per_stretch_between_barriers(
    order: str, pairs: list[tuple[str, int]], expected: list[list[int]]
) -> None:
    assert _stretches(entries(pairs), order) == expected


def test_no_array_past_max_array_size() -> None:
    assert _chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert _chunks(list(range(3)), 1001) == [[0, 1, 2]]
