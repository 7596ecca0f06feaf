"""The library API's errors name its keyword arguments, never a CLI flag to pass (the same
errors from the CLI keep their flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

import llenergymeasure as lem
from llenergymeasure.cli import cli
from llenergymeasure.errors import ConfigError, Option, PreflightError
from llenergymeasure.faces import cli_words, library_words

TWO = {
    "name": "two",
    "base": {"model": "builtin:tiny-llama", "n_prompts": 2, "max_output_tokens": 4},
    "grid": {"seed": [1, 2]},
}


@pytest.fixture
def one_experiment_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose user settings allow one experiment per campaign."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEM_MAX_EXPERIMENTS", "1")
    return tmp_path


def test_too_large_campaign_names_allow_large_and_it_lifts_the_limit(
    one_experiment_allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as info:
        lem.run_campaign(TWO, output_dir="out")
    message = str(info.value)
    assert "allow_large=True" in message and "--yes" not in message, message

    # allow_large passes the limit; the docker runner, asked for without its compose file,
    # is then refused in library words too, before anything is written.
    monkeypatch.setenv("LEM_COMPOSE_FILE", str(one_experiment_allowed / "missing.yaml"))
    with pytest.raises(PreflightError) as refused:
        lem.run_campaign(TWO, output_dir="out", allow_large=True, runner="docker")
    message = str(refused.value)
    assert 'runner="local"' in message and "--runner" not in message, message
    assert not (one_experiment_allowed / "out").exists()


def test_the_cli_keeps_its_flags(
    one_experiment_allowed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (one_experiment_allowed / "two.yaml").write_text(
        "name: two\nbase: {model: 'builtin:tiny-llama'}\ngrid: {seed: [1, 2]}\n"
    )
    assert cli(["campaign", "two.yaml", "--dry-run"]) == 2
    assert "--yes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [Option(k, v) for k, v in [("runner", "local"), ("allow_large", True), ("gpus", None),
     ("wait_for_gpus", True), ("force_unlock", True), ("output_dir", None)]],
)  # fmt: skip
def test_no_cli_flag_survives_translation(option: Option) -> None:
    """An error's option is worded as the face's own: a flag for the CLI, never for the API."""
    error = ConfigError("error: do this, or pass {0}, then stop", options=(option,))
    assert str(error) == f"error: do this, or pass {cli_words(option)}, then stop"
    said = error.worded(library_words)
    assert "--" not in said and option.key in said, said


def test_dir_shows_the_api_and_help_flags_are_plain(capsys: pytest.CaptureFixture[str]) -> None:
    public = [n for n in dir(lem) if not n.startswith("_")]
    assert public == sorted(lem.__all__), public
    assert all(callable(getattr(lem, n)) for n in public)
    for args in (["-h"], ["campaign", "-h"], ["resume", "-h"]):
        assert cli(args) == 0
        text = capsys.readouterr().out
        assert "Usage: lem" in text and "<bool>" not in text, text


def test_resume_without_a_directory_picks_from_the_results_folder(tmp_path: Path) -> None:
    """lem.resume() chooses as `lem resume` does (the conductor's one selection): with no
    unfinished campaign under the folder, it says so and names the folder."""
    with pytest.raises(ConfigError, match="nothing to resume") as info:
        lem.resume(results_dir=tmp_path)
    assert str(tmp_path.resolve()) in str(info.value)
