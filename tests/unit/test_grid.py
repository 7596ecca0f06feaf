"""Grid expansion: campaign files -> the validated, ordered, de-duplicated experiments."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llenergymeasure.config import ExperimentConfig, load_campaign, load_experiment
from llenergymeasure.config.grid import KNOWN_BACKENDS
from llenergymeasure.errors import ConfigError

WriteYaml = Callable[..., Path]


def test_two_by_two_grid_in_product_order(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: demo
        base:
          n_prompts: 8
          max_output_tokens: 16
        grid:
          batch_size: [1, 8]
          precision: [fp32, bf16]
        """
    )
    campaign = load_campaign(path)
    assert [e.label for e in campaign.experiments] == [
        {"batch_size": 1, "precision": "fp32"},
        {"batch_size": 1, "precision": "bf16"},
        {"batch_size": 8, "precision": "fp32"},
        {"batch_size": 8, "precision": "bf16"},
    ]
    for exp in campaign.experiments:
        assert exp.config.batch_size == exp.label["batch_size"]
        assert exp.config.precision == exp.label["precision"]
        # base settings reach every experiment
        assert exp.config.n_prompts == 8
        assert exp.config.max_output_tokens == 16
        assert exp.experiment_id == exp.config.experiment_id()
    assert len({e.experiment_id for e in campaign.experiments}) == 4
    assert campaign.notices == []
    assert campaign.config.name == "demo"
    assert campaign.source == path
    assert campaign.base_dir == path.resolve().parent


def test_grid_order_is_stable_across_loads(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\ngrid:\n  seed: [3, 1, 2]\n  batch_size: [4, 2]\n")
    first = [e.experiment_id for e in load_campaign(path).experiments]
    second = [e.experiment_id for e in load_campaign(path).experiments]
    assert first == second
    assert [e.label for e in load_campaign(path).experiments][:3] == [
        {"seed": 3, "batch_size": 4},
        {"seed": 3, "batch_size": 2},
        {"seed": 1, "batch_size": 4},
    ]


def test_dotted_universal_key_sets_nested_field(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        base:
          decoding: {strategy: sampling, top_p: 0.9}
        grid:
          decoding.temperature: [0.5, 1.5]
        """
    )
    exps = load_campaign(path).experiments
    assert [e.config.decoding.temperature for e in exps] == [0.5, 1.5]
    # the rest of base's decoding section is kept, not replaced
    assert all(e.config.decoding.strategy == "sampling" for e in exps)
    assert all(e.config.decoding.top_p == 0.9 for e in exps)
    assert [e.label for e in exps] == [
        {"decoding.temperature": 0.5},
        {"decoding.temperature": 1.5},
    ]


def test_backend_list_and_scoped_universal_key(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        grid:
          backend: [pytorch]
          pytorch.batch_size: [1, 4]
        """
    )
    exps = load_campaign(path).experiments
    assert [e.label for e in exps] == [
        {"backend": "pytorch", "pytorch.batch_size": 1},
        {"backend": "pytorch", "pytorch.batch_size": 4},
    ]
    assert [e.config.batch_size for e in exps] == [1, 4]
    assert all(e.config.backend == "pytorch" for e in exps)
    # a universal field scoped to a backend is still the universal field, not a section key
    assert all(e.config.pytorch is not None for e in exps)
    assert exps[0].config == ExperimentConfig(batch_size=1)


def test_scoped_key_without_backend_list_uses_base_backend(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\ngrid:\n  pytorch.batch_size: [2, 3]\n")
    exps = load_campaign(path).experiments
    assert [e.config.batch_size for e in exps] == [2, 3]
    assert [e.label for e in exps] == [{"pytorch.batch_size": 2}, {"pytorch.batch_size": 3}]


def test_scoped_section_key_resolves_into_backend_section(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        base:
          pytorch: {device: cpu}
        grid:
          pytorch.attn_implementation: [eager, sdpa]
          batch_size: [1, 2]
        """
    )
    exps = load_campaign(path).experiments
    assert len(exps) == 4
    attn = [e.config.pytorch.attn_implementation for e in exps if e.config.pytorch]
    assert attn == ["eager", "sdpa", "eager", "sdpa"]
    # universal dimensions come first (slowest), then the backend's own
    assert [e.label for e in exps][:2] == [
        {"batch_size": 1, "pytorch.attn_implementation": "eager"},
        {"batch_size": 1, "pytorch.attn_implementation": "sdpa"},
    ]
    assert [e.config.batch_size for e in exps] == [1, 1, 2, 2]
    # the section from base is merged into, not replaced
    assert all(e.config.pytorch is not None and e.config.pytorch.device == "cpu" for e in exps)


def test_scoped_and_universal_keys_with_same_effect_are_equal(write_yaml: WriteYaml) -> None:
    scoped = write_yaml("name: x\ngrid:\n  pytorch.seed: [5]\n", "a.yaml")
    universal = write_yaml("name: x\ngrid:\n  seed: [5]\n", "b.yaml")
    assert (
        load_campaign(scoped).experiments[0].experiment_id
        == load_campaign(universal).experiments[0].experiment_id
    )


def test_unknown_backend_in_grid_lists_known_backends(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        grid:
          backend: [pytorch, sglang]
          batch_size: [1]
        """
    )
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert "unknown backend 'sglang'" in message
    assert f"expected one of: {', '.join(KNOWN_BACKENDS)}" in message
    assert "pytorch" in message
    assert str(path) in message
    assert "grid.backend[1]" in message
    assert "line 4" in message


def test_unknown_backend_in_base_with_grid_points_at_base(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\nbase:\n  backend: sglang\ngrid:\n  batch_size: [1]\n")
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert "unknown backend 'sglang'" in message
    assert "base.backend" in message
    assert "line 3" in message


def test_explicit_experiments_are_deep_merged_over_base(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        base:
          batch_size: 2
          decoding: {strategy: sampling, temperature: 0.7}
          pytorch: {device: cpu}
        experiments:
          - decoding: {top_p: 0.9}
          - batch_size: 4
            pytorch: {attn_implementation: eager}
        """
    )
    first, second = load_campaign(path).experiments
    assert first.config.batch_size == 2
    assert first.config.decoding.strategy == "sampling"
    assert first.config.decoding.temperature == 0.7
    assert first.config.decoding.top_p == 0.9
    assert first.label == {"decoding.top_p": 0.9}

    assert second.config.batch_size == 4
    assert second.config.decoding.temperature == 0.7
    assert second.config.pytorch is not None
    assert second.config.pytorch.device == "cpu"
    assert second.config.pytorch.attn_implementation == "eager"
    assert second.label == {"batch_size": 4, "pytorch.attn_implementation": "eager"}


def test_grid_and_experiments_are_a_union_grid_first(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        grid:
          batch_size: [1, 2]
        experiments:
          - {batch_size: 4, precision: fp16}
          - {batch_size: 8}
        """
    )
    exps = load_campaign(path).experiments
    assert [(e.config.batch_size, e.config.precision) for e in exps] == [
        (1, "fp32"),
        (2, "fp32"),
        (4, "fp16"),
        (8, "fp32"),
    ]
    assert exps[2].label == {"batch_size": 4, "precision": "fp16"}


def test_duplicates_run_once_with_a_notice(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        grid:
          batch_size: [1, 2]
        experiments:
          - {batch_size: 2}
          - {batch_size: 3}
        """
    )
    campaign = load_campaign(path)
    assert [e.config.batch_size for e in campaign.experiments] == [1, 2, 3]
    # the first occurrence is kept
    assert campaign.experiments[1].label == {"batch_size": 2}
    assert len(campaign.notices) == 1
    notice = campaign.notices[0]
    dup_id = campaign.experiments[1].experiment_id
    assert dup_id in notice
    assert "(batch_size=2)" in notice
    assert "runs once" in notice


def test_values_equal_to_the_default_are_duplicates(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        experiments:
          - {}
          - {pytorch: {}}
          - {batch_size: 1, seed: 42}
        """
    )
    campaign = load_campaign(path)
    assert len(campaign.experiments) == 1
    assert campaign.experiments[0].experiment_id == ExperimentConfig().experiment_id()
    assert len(campaign.notices) == 2


def test_repeated_grid_value_is_one_experiment(write_yaml: WriteYaml) -> None:
    campaign = load_campaign(write_yaml("name: x\ngrid:\n  batch_size: [4, 4]\n"))
    assert [e.config.batch_size for e in campaign.experiments] == [4]
    assert len(campaign.notices) == 1


def test_neither_grid_nor_experiments_is_one_experiment_from_base(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\ncycles: 3\nbase:\n  batch_size: 16\n  precision: bf16\n")
    campaign = load_campaign(path)
    assert len(campaign.experiments) == 1
    exp = campaign.experiments[0]
    assert exp.label == {}
    assert exp.config == ExperimentConfig(batch_size=16, precision="bf16")
    assert campaign.config.cycles == 3
    assert campaign.notices == []


def test_only_name_gives_the_default_experiment(write_yaml: WriteYaml) -> None:
    campaign = load_campaign(write_yaml("name: x\n"))
    assert [e.config for e in campaign.experiments] == [ExperimentConfig()]


def test_base_invalid_alone_but_valid_with_grid_values(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        base:
          decoding: {temperature: 0.5}
        grid:
          decoding.strategy: [sampling]
        """
    )
    (exp,) = load_campaign(path).experiments
    assert exp.config.decoding.strategy == "sampling"
    assert exp.config.decoding.temperature == 0.5


def test_loading_does_not_mutate_the_campaign_base(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        name: x
        base:
          pytorch: {device: cpu}
        grid:
          pytorch.attn_implementation: [eager]
        experiments:
          - pytorch: {attn_implementation: sdpa}
        """
    )
    campaign = load_campaign(path)
    assert campaign.config.base == {"pytorch": {"device": "cpu"}}


def test_relative_path_base_dir_is_the_file_directory(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    sub = tmp_path / "campaigns"
    sub.mkdir()
    path = write_yaml("name: x\n", "campaigns/c.yaml")
    assert load_campaign(path).base_dir == sub.resolve()


# ---------------------------------------------------------------------------- experiment files


def test_load_experiment_top_level_keys(write_yaml: WriteYaml) -> None:
    path = write_yaml("batch_size: 4\nprecision: bf16\nmax_output_tokens: 8\n", "my exp.yaml")
    campaign = load_experiment(path)
    assert campaign.config.name == "my-exp"
    assert campaign.config.cycles == 1
    assert campaign.config.grid is None
    (exp,) = campaign.experiments
    assert exp.config == ExperimentConfig(batch_size=4, precision="bf16", max_output_tokens=8)
    assert exp.label == {}
    assert campaign.base_dir == path.resolve().parent


def test_experiment_file_and_campaign_base_give_the_same_id(write_yaml: WriteYaml) -> None:
    exp_file = write_yaml("batch_size: 4\nseed: 1\n", "one.yaml")
    campaign_file = write_yaml("name: c\nbase:\n  seed: 1\n  batch_size: 4\n", "c.yaml")
    assert (
        load_experiment(exp_file).experiments[0].experiment_id
        == load_campaign(campaign_file).experiments[0].experiment_id
    )


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("expérience.yaml", "exp-rience"),
        ("..hidden.yaml", "hidden"),
        ("日本.yaml", "run"),
        (f"{'a' * 80}.yaml", "a" * 64),
    ],
)
def test_experiment_file_name_becomes_a_valid_campaign_name(
    write_yaml: WriteYaml, filename: str, expected: str
) -> None:
    campaign = load_experiment(write_yaml("batch_size: 2\n", filename))
    assert campaign.config.name == expected


def test_experiment_file_errors_point_at_top_level_keys(write_yaml: WriteYaml) -> None:
    path = write_yaml("precision: fp16\nbatch_size: 0\n", "exp.yaml")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "line 2, at batch_size:" in message
    assert "base." not in message


def test_experiment_file_rejects_campaign_keys(write_yaml: WriteYaml) -> None:
    path = write_yaml("batch_size: 2\ngrid:\n  seed: [1, 2]\n", "exp.yaml")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert "unknown key 'grid'" in str(info.value)
    assert "line 2" in str(info.value)
