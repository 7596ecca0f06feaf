"""User settings (.lem-config.yaml): defaults, values, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure.config.campaign import Gaps
from llenergymeasure.config.settings import SETTINGS_FILE, UserSettings, load_settings
from llenergymeasure.errors import ConfigError


def write_settings(directory: Path, text: str) -> Path:
    path = directory / SETTINGS_FILE
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path) == UserSettings()
    assert load_settings(tmp_path).gaps == Gaps()


def test_values_from_the_file(tmp_path: Path) -> None:
    write_settings(
        tmp_path, "gaps:\n  between_experiments_s: 0\n  skip_in_fresh_containers: true\n"
    )
    gaps = load_settings(tmp_path).gaps
    assert gaps.between_experiments_s == 0.0
    assert gaps.between_cycles_s == Gaps().between_cycles_s
    assert gaps.skip_in_fresh_containers is True


def test_default_directory_is_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_settings(tmp_path, "gaps: {between_cycles_s: 12}\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().gaps.between_cycles_s == 12.0


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "gaps:\n  between_experiment_s: 3\n",
            ["line 2, at gaps.between_experiment_s", "did you mean 'between_experiments_s'?"],
        ),
        ("gap: {}\n", ["line 1, at gap", "did you mean 'gaps'?"]),
        ("gaps:\n  between_cycles_s: -2\n", ["line 2", "greater than or equal to 0"]),
        ("gaps:\n  between_cycles_s: soon\n", ["line 2", "valid number"]),
        ("gaps: [1]\n", ["line 1, at gaps"]),
        ("", ["is empty"]),
        ("gaps: {a: 1\n", ["YAML syntax error"]),
    ],
)
def test_bad_settings_are_clear_config_errors(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write_settings(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert info.value.exit_code == 2
