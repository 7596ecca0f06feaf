"""Every kind of bad input -> one ConfigError naming the file, key path, line and expectation;
and through the real CLI: exit code 2, the message on stderr, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llenergymeasure.config import load_campaign, load_experiment
from llenergymeasure.config.loader import format_path, read_yaml
from llenergymeasure.errors import ConfigError, LemError

WriteYaml = Callable[..., Path]


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    assert info.value.exit_code == 2
    return str(info.value)


# ----------------------------------------------------------------------------- key validation


def test_unknown_key_with_did_you_mean(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """\
        name: x
        base:
          n_prompts: 4
          batchsize: 4
        """
    )
    message = config_error(path)
    assert str(path) in message
    assert "line 4" in message
    assert "at base.batchsize" in message
    assert "unknown key 'batchsize'" in message
    assert "did you mean 'batch_size'?" in message
    assert "known keys here:" in message


def test_unknown_top_level_key(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\ngird:\n  batch_size: [1]\n"))
    assert "line 2, at gird: unknown key 'gird'; did you mean 'grid'?" in message


def test_unknown_nested_key(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\nbase:\n  decoding:\n    temprature: 0.5\n")
    message = config_error(path)
    assert "line 4, at base.decoding.temprature" in message
    assert "did you mean 'temperature'?" in message
    # the hint lists the keys of the nested section, not the top level
    assert "ignore_eos" in message
    assert "batch_size" not in message


def test_unknown_key_without_close_match_lists_known_keys(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\nbase:\n  zzz: 1\n"))
    assert "unknown key 'zzz'" in message
    assert "did you mean" not in message
    assert "known keys here: backend, batch_size" in message


def test_unknown_key_in_grid(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\ngrid:\n  batchsize: [1, 2]\n"))
    assert "line 3" in message
    assert "grid.batchsize[0]" in message
    assert "did you mean 'batch_size'?" in message


def test_section_of_another_backend_is_rejected_at_its_key(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\nbase:\n  backend: pytorch\n  vllm: {}\n"))
    assert "line 4, at base.vllm: section `vllm:` is set but backend is 'pytorch'" in message


def test_wrong_type(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\nbase:\n  batch_size: four\n")
    message = config_error(path)
    assert str(path) in message
    assert "line 3, at base.batch_size" in message
    assert "valid integer" in message
    assert "(got 'four')" in message


def test_grid_value_not_a_list(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\ngrid:\n  batch_size: 4\n"))
    assert "line 3, at grid.batch_size" in message
    assert "valid list" in message


def test_wrong_type_for_a_section(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\nbase:\n  decoding: greedy\n"))
    assert "line 3, at base.decoding" in message
    assert "(got 'greedy')" in message


def test_missing_name(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("base:\n  batch_size: 2\n"))
    assert "at name: required key is missing" in message


def test_bad_campaign_name(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: 'my campaign'\n"))
    assert "line 1, at name" in message
    assert "(got 'my campaign')" in message


# ----------------------------------------------------------------------------- value ranges


def test_out_of_range_in_grid_block_list(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """\
        name: x
        grid:
          batch_size:
            - 1
            - 0
        """
    )
    message = config_error(path)
    assert str(path) in message
    assert "line 5, at grid.batch_size[1]" in message
    assert "greater than or equal to 1" in message
    assert "(got 0)" in message
    assert "in experiment (batch_size=0)" in message


def test_out_of_range_in_grid_flow_list(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\nbase:\n  seed: 1\ngrid:\n  batch_size: [1, 0]\n")
    message = config_error(path)
    assert "line 5, at grid.batch_size[1]" in message


def test_out_of_range_in_base(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\nbase:\n  warmup:\n    runs: -1\n"))
    assert "line 4, at base.warmup.runs" in message
    assert "greater than or equal to 0" in message


def test_bad_value_in_scoped_grid_key(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\ngrid:\n  pytorch.attn_implementation: [eager, flash]\n")
    message = config_error(path)
    assert "line 3, at grid.pytorch.attn_implementation[1]" in message
    assert "'eager', 'sdpa' or 'flash_attention_2'" in message
    assert "(got 'flash')" in message


def test_bad_value_in_explicit_experiment(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """\
        name: x
        experiments:
          - batch_size: 2
          - batch_size: 3
            precision: fp8
        """
    )
    message = config_error(path)
    assert "line 5, at experiments[1].precision" in message
    assert "'fp32', 'fp16' or 'bf16'" in message
    assert "(got 'fp8')" in message


def test_greedy_with_temperature_points_at_decoding(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\nbase:\n  decoding:\n    temperature: 0.5\n")
    message = config_error(path)
    assert "line 3, at base.decoding" in message
    assert "temperature" in message
    assert "set `strategy: sampling`" in message


def test_greedy_with_temperature_from_grid_points_at_grid(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\ngrid:\n  decoding.temperature: [1.0, 0.5]\n")
    message = config_error(path)
    assert "line 3, at grid.decoding.temperature[1]" in message
    assert "set `strategy: sampling`" in message


def test_jsonl_without_path(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\nbase:\n  prompts: {source: jsonl}\n"))
    assert "line 3, at base.prompts" in message
    assert "needs `path`" in message


def test_several_problems_are_all_listed(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\nbase:\n  batch_size: 0\n  seed: -1\n  precision: fp8\n")
    message = config_error(path)
    assert "line 3, at base.batch_size" in message
    assert "line 4, at base.seed" in message
    assert "line 5, at base.precision" in message


# ---------------------------------------------------------------------------- grid structure


def test_empty_grid(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\ngrid: {}\n")
    message = config_error(path)
    assert str(path) in message
    assert "line 2, at grid" in message
    assert "grid is empty" in message


def test_empty_value_list(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\ngrid:\n  batch_size: []\n")
    message = config_error(path)
    assert "line 2, at grid" in message
    assert "'batch_size' has an empty list of values" in message


def test_empty_experiments_list(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\nexperiments: []\n"))
    assert "`experiments:` is an empty list" in message


def test_duplicate_key(write_yaml: WriteYaml) -> None:
    # YAML keeps the last of two equal keys: a whole grid dimension would vanish silently
    path = write_yaml("name: x\ngrid:\n  batch_size: [1, 2]\n  batch_size: [4]\n")
    message = config_error(path)
    assert str(path) in message
    assert "line 4, at grid.batch_size" in message
    assert "duplicate key 'batch_size' (first set on line 3)" in message


def test_duplicate_key_inside_a_list_item(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\nexperiments:\n  - {seed: 1}\n  - {seed: 1, seed: 2}\n")
    message = config_error(path)
    assert "line 4, at experiments[1].seed: duplicate key 'seed'" in message


def test_yaml_merge_keys_are_not_duplicates(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """\
        name: x
        base: &common
          batch_size: 2
        experiments:
          - <<: *common
            precision: fp16
          - <<: *common
            precision: bf16
        """
    )
    assert [e.config.precision for e in load_campaign(path).experiments] == ["fp16", "bf16"]


# -------------------------------------------------------------------------------- file level


def test_yaml_syntax_error_has_line_and_column(write_yaml: WriteYaml) -> None:
    path = write_yaml("name: x\nbase:\n  batch_size: [1, 2\n  precision: fp16\n")
    message = config_error(path)
    assert str(path) in message
    assert "line 4, column" in message
    assert "YAML syntax error" in message


def test_tab_indentation_is_a_syntax_error(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\n\tbase: {}\n"))
    assert "line 2, column 1: YAML syntax error" in message


def test_two_documents_is_an_error(write_yaml: WriteYaml) -> None:
    message = config_error(write_yaml("name: x\n---\nname: y\n"))
    assert "line 2, column 1: YAML syntax error" in message
    assert "another document" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(path)
    assert message == f"campaign file not found: {path}"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    message = config_error(tmp_path)
    assert str(tmp_path) in message
    assert "is a directory; expected a YAML file" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "~\n"])
def test_empty_file(write_yaml: WriteYaml, text: str) -> None:
    path = write_yaml(text)
    message = config_error(path)
    assert message == f"{path} is empty; expected a YAML mapping of settings"


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("hello\n", "str"), ("42\n", "int")]
)
def test_top_level_not_a_mapping(write_yaml: WriteYaml, text: str, kind: str) -> None:
    path = write_yaml(text)
    message = config_error(path)
    assert str(path) in message
    assert "expected a YAML mapping" in message
    assert f"got {kind}" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    message = config_error(path)
    assert f"campaign file {path} is not UTF-8 text (byte 9); save it as UTF-8" in message


def test_experiment_file_messages_say_experiment_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment(path)


def test_config_error_is_a_lem_error_with_exit_code_2() -> None:
    assert issubclass(ConfigError, LemError)
    assert ConfigError.exit_code == 2
    assert LemError.exit_code == 1


# ------------------------------------------------------------------------ message building


def test_format_path() -> None:
    assert format_path(("grid", "batch_size", 1)) == "grid.batch_size[1]"
    assert format_path(("experiments", 0, "decoding", "top_p")) == "experiments[0].decoding.top_p"
    assert format_path(()) == ""


def test_line_of_points_at_the_key_not_its_block_value(write_yaml: WriteYaml) -> None:
    doc = read_yaml(write_yaml("name: x\ngrid:\n  batch_size:\n    - 1\n    - 2\n"))
    assert doc.line_of(("grid",)) == 2
    assert doc.line_of(("grid", "batch_size")) == 3
    assert doc.line_of(("grid", "batch_size", 1)) == 5
    # a missing key: the deepest line found along the way
    assert doc.line_of(("grid", "nope")) == 2
    assert doc.line_of(("grid", "batch_size", 9)) == 3
    assert doc.where(()).endswith("at <top level>")


# ------------------------------------------------------------------------------ the real CLI


def run_cli(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`lem ARGS` in a subprocess; env adds to (or overrides) the environment."""
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llenergymeasure.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def one_line(text: str) -> str:
    """Undo any terminal wrapping so substrings can be matched."""
    return " ".join(text.split())


CLI_CASES = {
    "range": ("name: x\ngrid:\n  batch_size: [1, 0]\n", "line 3, at grid.batch_size[1]"),
    "unknown-key": ("name: x\nbase:\n  batchsize: 4\n", "did you mean 'batch_size'?"),
    "syntax": ("name: x\nbase: [1, 2\n", "YAML syntax error"),
    "empty": ("", "is empty; expected a YAML mapping"),
    "backend": ("name: x\ngrid:\n  backend: [sglang]\n", "expected one of: pytorch, vllm"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_campaign_exits_2_without_traceback(tmp_path: Path, case: str) -> None:
    text, expected = CLI_CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, encoding="utf-8")
    proc = run_cli("campaign", path.name, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    stderr = one_line(proc.stderr)
    assert stderr.startswith("error:")
    assert path.name in stderr
    assert expected in stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    # nothing was created: bad input is rejected before a campaign directory exists
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run_cli("run", "missing.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "experiment file not found: missing.yaml" in one_line(proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("campaign",), "Missing argument"),
        (("campaign", "--no-such-option", "x.yaml"), "No such option"),
        (("campaign", "x.yaml", "--timeout", "0"), "Invalid value for '--timeout'"),
        (("no-such-command",), "No such command"),
    ],
)
def test_cli_usage_error_exits_2_without_traceback(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in one_line(proc.stderr)
    assert "Usage:" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
