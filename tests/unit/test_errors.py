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


# ------------------------------------------------ bad campaign files: file, line, key, expected

BAD_FILES = [
    # (id, file text, what the message says, what it must not say)
    ("unknown-key-did-you-mean", "name: x\nbase:\n  n_prompts: 4\n  batchsize: 4\n",
     ["line 4", "at base.batchsize", "unknown key 'batchsize'",
      "did you mean 'batch_size'?", "known keys here:"], []),
    ("unknown-top-level-key", "name: x\ngird:\n  batch_size: [1]\n",
     ["line 2, at gird: unknown key 'gird'; did you mean 'grid'?"], []),
    ("unknown-nested-key", "name: x\nbase:\n  decoding:\n    temprature: 0.5\n",
     ["line 4, at base.decoding.temprature", "did you mean 'temperature'?",
      "ignore_eos"],  # the hint lists the keys of the nested section, not the top level
     ["batch_size"]),
    ("unknown-key-no-close-match", "name: x\nbase:\n  zzz: 1\n",
     ["unknown key 'zzz'", "known keys here: backend, batch_size"], ["did you mean"]),
    ("unknown-key-in-grid", "name: x\ngrid:\n  batchsize: [1, 2]\n",
     ["line 3", "grid.batchsize[0]", "did you mean 'batch_size'?"], []),
    ("section-of-another-backend", "name: x\nbase:\n  backend: pytorch\n  vllm: {}\n",
     ["line 4, at base.vllm: section `vllm:` is set but backend is 'pytorch'"], []),
    ("wrong-type", "name: x\nbase:\n  batch_size: four\n",
     ["line 3, at base.batch_size", "valid integer", "(got 'four')"], []),
    ("grid-value-not-a-list", "name: x\ngrid:\n  batch_size: 4\n",
     ["line 3, at grid.batch_size", "valid list"], []),
    ("wrong-type-for-a-section", "name: x\nbase:\n  decoding: greedy\n",
     ["line 3, at base.decoding", "(got 'greedy')"], []),
    ("missing-name", "base:\n  batch_size: 2\n", ["at name: required key is missing"], []),
    ("bad-campaign-name", "name: 'my campaign'\n", ["line 1, at name", "(got 'my campaign')"], []),
    ("out-of-range-in-grid-block-list", "name: x\ngrid:\n  batch_size:\n    - 1\n    - 0\n",
     ["line 5, at grid.batch_size[1]", "greater than or equal to 1", "(got 0)",
      "in experiment (batch_size=0)"], []),
    ("out-of-range-in-grid-flow-list", "name: x\nbase:\n  seed: 1\ngrid:\n  batch_size: [1, 0]\n",
     ["line 5, at grid.batch_size[1]"], []),
    ("out-of-range-in-base", "name: x\nbase:\n  warmup:\n    runs: -1\n",
     ["line 4, at base.warmup.runs", "greater than or equal to 0"], []),
    ("bad-value-in-scoped-grid-key",
     "name: x\ngrid:\n  pytorch.attn_implementation: [eager, flash]\n",
     ["line 3, at grid.pytorch.attn_implementation[1]",
      "'eager', 'sdpa' or 'flash_attention_2'", "(got 'flash')"], []),
    ("bad-value-in-explicit-experiment",
     "name: x\nexperiments:\n  - batch_size: 2\n  - batch_size: 3\n    precision: fp8\n",
     ["line 5, at experiments[1].precision", "'fp32', 'fp16' or 'bf16'", "(got 'fp8')"], []),
    ("greedy-with-temperature", "name: x\nbase:\n  decoding:\n    temperature: 0.5\n",
     ["line 3, at base.decoding", "temperature", "set `strategy: sampling`"], []),
    ("greedy-with-temperature-from-grid", "name: x\ngrid:\n  decoding.temperature: [1.0, 0.5]\n",
     ["line 3, at grid.decoding.temperature[1]", "set `strategy: sampling`"], []),
    ("jsonl-without-path", "name: x\nbase:\n  prompts: {source: jsonl}\n",
     ["line 3, at base.prompts", "needs `path`"], []),
    ("several-problems", "name: x\nbase:\n  batch_size: 0\n  seed: -1\n  precision: fp8\n",
     ["line 3, at base.batch_size", "line 4, at base.seed", "line 5, at base.precision"], []),
    ("empty-grid", "name: x\ngrid: {}\n", ["line 2, at grid", "grid is empty"], []),
    ("empty-value-list", "name: x\ngrid:\n  batch_size: []\n",
     ["line 2, at grid", "'batch_size' has an empty list of values"], []),
    ("empty-experiments-list", "name: x\nexperiments: []\n",
     ["`experiments:` is an empty list"], []),
    # YAML keeps the last of two equal keys: a whole grid dimension would vanish silently
    ("duplicate-key", "name: x\ngrid:\n  batch_size: [1, 2]\n  batch_size: [4]\n",
     ["line 4, at grid.batch_size", "duplicate key 'batch_size' (first set on line 3)"], []),
    ("duplicate-key-inside-a-list-item",
     "name: x\nexperiments:\n  - {seed: 1}\n  - {seed: 1, seed: 2}\n",
     ["line 4, at experiments[1].seed: duplicate key 'seed'"], []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "says", "never_says"), [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_bad_campaign_file_names_file_line_key_and_expectation(
    write_yaml: WriteYaml, text: str, says: list[str], never_says: list[str]
) -> None:
    path = write_yaml(text)
    message = config_error(path)
    assert str(path) in message
    for fragment in says:
        assert fragment in message
    for fragment in never_says:
        assert fragment not in message


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
