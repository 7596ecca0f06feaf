"""Run order (interleaved / shuffled / grouped), effective execution settings, gap rules, and
--gpus parsing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llenergymeasure.config import load_campaign
from llenergymeasure.config.campaign import CampaignConfig, Execution, Gaps
from llenergymeasure.config.settings import UserSettings, resolve_settings
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.manifest import ManifestEntry
from llenergymeasure.orchestrator.schedule import (
    check_gpu_needs,
    effective_gaps,
    gap_between,
    needs_barrier,
    parse_gpus,
    resolve_execution,
    run_order,
)

WriteYaml = Callable[..., Path]


def entry(experiment_id: str, cycle: int) -> ManifestEntry:
    return ManifestEntry(
        experiment_id=experiment_id,
        cycle=cycle,
        backend="pytorch",
        runner="local",
        exp_path=f"{experiment_id}/cycle-{cycle}/exp.json",
    )


# ----------------------------------------------------------------------------------- order


def test_interleaved_repeats_the_set_in_file_order() -> None:
    assert run_order(3, 2, "interleaved", None) == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]


def test_grouped_runs_each_experiment_s_cycles_back_to_back() -> None:
    assert run_order(2, 3, "grouped", None) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]


def test_shuffled_is_a_permutation_per_cycle_reproducible_from_the_seed() -> None:
    order = run_order(6, 4, "shuffled", 7)
    assert order == run_order(6, 4, "shuffled", 7)
    for cycle in range(1, 5):
        in_cycle = [i for i, c in order if c == cycle]
        assert sorted(in_cycle) == list(range(6))
    # cycles come one after another
    assert [c for _, c in order] == sorted(c for _, c in order)
    # each cycle gets its own order, and another seed gives another order
    per_cycle = {tuple(i for i, c in order if c == cycle) for cycle in range(1, 5)}
    assert len(per_cycle) > 1
    assert run_order(6, 4, "shuffled", 8) != order


def test_shuffled_cycle_order_does_not_depend_on_the_number_of_cycles() -> None:
    assert run_order(5, 2, "shuffled", 3) == run_order(5, 4, "shuffled", 3)[:10]


# ------------------------------------------------------------------------ effective values


def test_gaps_come_from_campaign_then_settings_then_defaults() -> None:
    settings = UserSettings(gaps=Gaps(between_experiments_s=2.0))
    config = CampaignConfig.model_validate({"name": "x", "gaps": {"between_cycles_s": 9}})
    gaps = resolve_execution(config, resolve_settings(settings, config)).gaps
    assert gaps.between_experiments_s == 2.0  # user settings
    assert gaps.between_cycles_s == 9.0  # campaign file
    assert gaps.skip_in_fresh_containers is False  # default
    assert resolve_execution(CampaignConfig(name="x"), UserSettings()).gaps == Gaps()
    assert Gaps() == Gaps(between_experiments_s=5.0, between_cycles_s=30.0)


def test_campaign_gaps_override_settings_even_with_default_values() -> None:
    settings = UserSettings(gaps=Gaps(between_experiments_s=0.0, between_cycles_s=0.0))
    config = CampaignConfig.model_validate({"name": "x", "gaps": {"between_cycles_s": 30.0}})
    gaps = resolve_execution(config, resolve_settings(settings, config)).gaps
    assert (gaps.between_experiments_s, gaps.between_cycles_s) == (0.0, 30.0)


def test_shuffled_without_seed_draws_one_and_records_it() -> None:
    config = CampaignConfig(name="x", order="shuffled")
    seeds = {resolve_execution(config, UserSettings()).order_seed for _ in range(5)}
    assert None not in seeds
    assert len(seeds) > 1
    fixed = CampaignConfig(name="x", order="shuffled", order_seed=5)
    assert resolve_execution(fixed, UserSettings()).order_seed == 5
    assert resolve_execution(CampaignConfig(name="x"), UserSettings()).order_seed is None


def test_execution_carries_thermal_floor_and_statistics() -> None:
    config = CampaignConfig.model_validate(
        {
            "name": "x",
            "thermal_floor_c": 50,
            "thermal_floor_max_wait_s": 120,
            "statistics": {"group_by": ["batch_size"], "confidence": 0.9},
        }
    )
    execution = resolve_execution(config, UserSettings())
    assert (execution.thermal_floor_c, execution.thermal_floor_max_wait_s) == (50.0, 120.0)
    assert execution.statistics.group_by == ["batch_size"]
    assert execution.statistics.confidence == 0.9
    # a manifest recorded before issue 26 names the bootstrap's settings: it still loads
    old = execution.model_dump(mode="json")
    old["statistics"] |= {"bootstrap_resamples": 500, "seed": 3}
    assert Execution.model_validate(old) == execution


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"order": "random"}, "'interleaved', 'shuffled' or 'grouped'"),
        ({"order_seed": 3}, "order_seed only applies to `order: shuffled`"),
        ({"gaps": {"between_experiments_s": -1}}, "greater than or equal to 0"),
        ({"gaps": {"between": 1}}, "Extra inputs"),
        ({"thermal_floor_c": 0}, "greater than 0"),
        ({"thermal_floor_max_wait_s": 10}, "only applies with thermal_floor_c"),
        ({"statistics": {"group_by": ["batchsize"]}}, "'batchsize' is not an experiment"),
        ({"statistics": {"group_by": ["seed", "seed"]}}, "lists a parameter twice"),
        ({"statistics": {"group_by": []}}, "at least 1 item"),
        ({"statistics": {"confidence": 1.0}}, "less than 1"),
        ({"statistics": {"bootstrap_resamples": 500}}, "Extra inputs"),  # no bootstrap now
        ({"cycles": 0}, "greater than or equal to 1"),
    ],
)
def test_execution_settings_are_validated(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        CampaignConfig.model_validate({"name": "x", **data})
    assert fragment in str(info.value)


def test_group_by_accepts_nested_and_backend_scoped_parameters() -> None:
    keys = ["backend", "decoding.temperature", "pytorch.attn_implementation", "warmup.runs"]
    config = CampaignConfig.model_validate({"name": "x", "statistics": {"group_by": keys}})
    assert config.statistics.group_by == keys


# ------------------------------------------------------------------------------------ gaps


GAPS = Gaps(between_experiments_s=2.0, between_cycles_s=7.0)


def test_gap_rules_interleaved_and_shuffled() -> None:
    for order in ("interleaved", "shuffled"):
        assert gap_between(None, entry("a", 1), order, GAPS).seconds == 0.0
        assert gap_between(entry("a", 1), entry("b", 1), order, GAPS).seconds == 2.0
        cycle_gap = gap_between(entry("b", 1), entry("a", 2), order, GAPS)
        assert (cycle_gap.seconds, cycle_gap.reason) == (7.0, "between cycles")
        assert needs_barrier(entry("b", 1), entry("a", 2), order)
        assert not needs_barrier(entry("a", 1), entry("b", 1), order)
        assert not needs_barrier(None, entry("a", 1), order)


def test_gap_rules_grouped() -> None:
    repeat = gap_between(entry("a", 1), entry("a", 2), "grouped", GAPS)
    assert (repeat.seconds, repeat.reason) == (7.0, "between cycles")
    other = gap_between(entry("a", 3), entry("b", 1), "grouped", GAPS)
    assert (other.seconds, other.reason) == (2.0, "between experiments")
    assert not needs_barrier(entry("a", 3), entry("b", 1), "grouped")


def test_fresh_containers_skip_gaps_only_when_the_user_opts_in() -> None:
    assert effective_gaps(GAPS, fresh_container_per_run=True) == GAPS
    assert effective_gaps(GAPS, fresh_container_per_run=False) == GAPS
    opted = GAPS.model_copy(update={"skip_in_fresh_containers": True})
    skipped = effective_gaps(opted, fresh_container_per_run=True)
    assert (skipped.between_experiments_s, skipped.between_cycles_s) == (0.0, 0.0)
    assert effective_gaps(opted, fresh_container_per_run=False) == opted


# ------------------------------------------------------------------------------------ gpus


def test_parse_gpus() -> None:
    assert parse_gpus("0") == (0,)
    assert parse_gpus("0,1, 3") == (0, 1, 3)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected GPU indices"),
        ("a", "expected GPU indices"),
        ("0,,1", "expected GPU indices"),
        ("-1", "expected GPU indices"),
        ("0,0", "lists a GPU twice"),
    ],
)
def test_parse_gpus_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_gpus(text)


def test_gpu_needs_must_fit() -> None:
    check_gpu_needs([("a", 1), ("b", 2)], (0, 1))
    with pytest.raises(ConfigError, match=r"experiment b needs 2 GPUs but --gpus lists 1 \(3\)"):
        check_gpu_needs([("a", 1), ("b", 2)], (3,))


def test_cli_overrides_replace_file_keys(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\ncycles: 2\norder: grouped\n")
    loaded = load_campaign(path, overrides={"cycles": 5, "order": "shuffled"})
    assert (loaded.config.cycles, loaded.config.order) == (5, "shuffled")
    with pytest.raises(ConfigError, match=r"invalid override cycles=0: .*greater than or equal"):
        load_campaign(path, overrides={"cycles": 0})
    with pytest.raises(ConfigError, match=r"invalid override cycle=3: Extra inputs"):
        load_campaign(path, overrides={"cycle": 3})
