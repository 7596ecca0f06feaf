"""User settings (.lem-config.yaml): defaults, values, and clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from unit_results import finish_campaign

from llenergymeasure.config import load_campaign
from llenergymeasure.config.campaign import Gaps
from llenergymeasure.config.settings import (
    SETTINGS_FILE,
    UserSettings,
    load_settings,
    resolve_settings,
)
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import ManifestStore
from llenergymeasure.results.collate import derived_energy, results_frame
from llenergymeasure.results.schema import EnergyFigures


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


# ------------------------------------------------------------- precedence, environment, record

FULL = """\
results_dir: file-results
runner: local
max_experiments: 50
carbon_intensity_g_per_kwh: 200
pue: 1.5
gaps: {between_experiments_s: 1, between_cycles_s: 2}
webhooks:
  urls: [https://hooks.example.com/services/T0/B0/file-secret]
  events: [campaign_finished]
"""


def test_every_setting_from_the_file_with_its_source(tmp_path: Path) -> None:
    path = write_settings(tmp_path, FULL)
    settings = load_settings(tmp_path, env={})
    assert settings.results_dir == "file-results"
    assert settings.runner == "local"
    assert settings.max_experiments == 50
    assert settings.carbon_intensity_g_per_kwh == 200.0
    assert settings.pue == 1.5
    assert settings.gaps.between_cycles_s == 2.0
    assert settings.webhooks is not None
    assert settings.webhooks.events == ["campaign_finished"]
    assert settings.webhooks.timeout_s == 5.0 and settings.webhooks.retries == 2
    assert settings.sources["pue"] == str(path)
    assert settings.sources["gaps.between_cycles_s"] == str(path)
    assert "timeout_s" not in settings.sources


def test_environment_over_file_over_default(tmp_path: Path) -> None:
    write_settings(tmp_path, FULL)
    env = {
        "LEM_OUTPUT_DIR": "/data/env-results",
        "LEM_RUNNER": "docker",
        "LEM_MAX_EXPERIMENTS": "7",
        "LEM_CARBON_INTENSITY_G_PER_KWH": "55.5",
        "LEM_PUE": "1.1",
        "LEM_GAP_BETWEEN_CYCLES_S": "9",
        "LEM_WEBHOOK_URL": "http://127.0.0.1:9/env-secret http://[::1]:8/x",
        "LEM_UNRELATED": "ignored",
        "LEM_PUE_EMPTY": "",
    }
    settings = load_settings(tmp_path, env=env)
    assert settings.results_dir == "/data/env-results"
    assert settings.runner == "docker"
    assert settings.max_experiments == 7
    assert settings.carbon_intensity_g_per_kwh == 55.5
    assert settings.pue == 1.1
    # one gap from the environment, the other still from the file
    assert settings.gaps.between_cycles_s == 9.0
    assert settings.gaps.between_experiments_s == 1.0
    assert settings.webhooks is not None
    assert settings.webhooks.urls[0].get_secret_value().endswith("env-secret")
    assert settings.webhooks.events == ["campaign_finished"]  # the rest of the file's section
    assert settings.sources["pue"] == "environment (LEM_PUE)"
    assert settings.sources["gaps.between_cycles_s"] == "environment (LEM_GAP_BETWEEN_CYCLES_S)"
    assert settings.sources["gaps.between_experiments_s"].endswith(SETTINGS_FILE)
    # an empty variable is ignored
    assert load_settings(tmp_path, env={"LEM_PUE": " "}).pue == 1.5


def test_cli_over_environment(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={"LEM_RUNNER": "docker"})
    assert settings.override("--runner", runner="local").runner == "local"
    assert settings.override("--runner", runner="local").sources["runner"] == "--runner"
    assert settings.override("--runner", runner=None).runner == "docker"  # no flag given


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"LEM_PUE": "high"}, "environment variable LEM_PUE='high': expected a number"),
        ({"LEM_MAX_EXPERIMENTS": "1.5"}, "LEM_MAX_EXPERIMENTS='1.5': expected an integer"),
        ({"LEM_PUE": "0.5"}, "environment variable LEM_PUE: Input should be greater than or"),
        ({"LEM_RUNNER": "podman"}, "environment variable LEM_RUNNER: Input should be 'auto'"),
        ({"LEM_MAX_EXPERIMENTS": "0"}, "environment variable LEM_MAX_EXPERIMENTS"),
    ],
)
def test_bad_environment_names_the_variable(
    tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env=env)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example.com/SECRET", "hooks.example.com/SECRET", "https:///SECRET", "SECRET"],
)
def test_bad_webhook_urls_are_never_shown(tmp_path: Path, url: str) -> None:
    (tmp_path / "file").mkdir()
    (tmp_path / "env").mkdir()
    path = write_settings(tmp_path / "file", f"webhooks:\n  urls: [{url}]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "file", env={})
    message = str(info.value)
    assert str(path) in message and "line 2" in message
    assert "not an http:// or https:// URL" in message
    assert "SECRET" not in message
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "env", env={"LEM_WEBHOOK_URL": url})
    assert "LEM_WEBHOOK_URL" in str(info.value)
    assert "SECRET" not in str(info.value)


def test_a_webhook_url_given_as_a_string_is_not_echoed(tmp_path: Path) -> None:
    write_settings(tmp_path, "webhooks:\n  urls: https://hooks.example.com/SECRET\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env={})
    assert "Input should be a valid list" in str(info.value)
    assert "SECRET" not in str(info.value)


def test_the_record_keeps_everything_but_the_secrets(tmp_path: Path) -> None:
    write_settings(tmp_path, FULL)
    env = {"LEM_WEBHOOK_URL": "https://user:pw@hooks.example.com:8443/env-secret?token=t0k"}
    settings = load_settings(tmp_path, env=env)
    record = settings.record()
    assert record.webhook_hosts == ["https://hooks.example.com:8443"]
    assert record.pue == 1.5 and record.carbon_intensity_g_per_kwh == 200.0
    assert record.sources["webhooks.urls"] == "environment (LEM_WEBHOOK_URL)"
    for text in (record.model_dump_json(), repr(settings), str(settings.model_dump())):
        for secret in ("env-secret", "t0k", "pw@", "file-secret"):
            assert secret not in text


@pytest.mark.parametrize(
    ("key", "file_line", "env", "campaign_line", "flag", "expected"),
    [
        ("results_dir", "results_dir: f", {}, "", None, ("f", "FILE")),
        (
            "results_dir",
            "results_dir: f",
            {"LEM_OUTPUT_DIR": "e"},
            "",
            None,
            ("e", "environment (LEM_OUTPUT_DIR)"),
        ),
        (
            "results_dir",
            "results_dir: f",
            {"LEM_OUTPUT_DIR": "e"},
            "output_dir: c",
            None,
            ("c", "campaign file"),
        ),
        (
            "results_dir",
            "results_dir: f",
            {"LEM_OUTPUT_DIR": "e"},
            "output_dir: c",
            "/cli",
            ("/cli", "--output-dir"),
        ),
        ("results_dir", "", {}, "", None, ("results", None)),
        ("runner", "runner: docker", {}, "", None, ("docker", "FILE")),
        (
            "runner",
            "runner: docker",
            {"LEM_RUNNER": "local"},
            "",
            None,
            ("local", "environment (LEM_RUNNER)"),
        ),
        ("runner", "runner: docker", {}, "runner: local", None, ("local", "campaign file")),
        (
            "runner",
            "runner: docker",
            {},
            "runner: local",
            "docker-persistent",
            ("docker-persistent", "--runner"),
        ),
        ("runner", "", {}, "", None, (None, None)),
    ],
)
def test_one_precedence_flag_campaign_environment_file_default(
    tmp_path: Path, write_yaml: Callable[..., Path], key: str, file_line: str,
    env: dict[str, str], campaign_line: str, flag: str | None,
    expected: tuple[str | None, str | None],
) -> None:  # fmt: skip
    """flag > campaign file > environment > .lem-config.yaml > default, each value recorded
    with where it came from."""
    path = write_settings(tmp_path, file_line + "\n") if file_line else None
    campaign = load_campaign(write_yaml(f"name: x\n{campaign_line}\n")).config
    flag_source = {"results_dir": "--output-dir", "runner": "--runner"}[key]
    resolved = resolve_settings(
        load_settings(tmp_path, env=env), campaign, flags={key: (flag, flag_source)}
    )
    value, source = expected
    assert getattr(resolved, key) == value
    assert resolved.record().sources.get(key) == (str(path) if source == "FILE" else source)


def test_gaps_key_by_key_from_the_campaign_file_over_the_settings(
    tmp_path: Path, write_yaml: Callable[..., Path]
) -> None:
    path = write_settings(tmp_path, "gaps: {between_experiments_s: 1, between_cycles_s: 2}\n")
    settings = load_settings(tmp_path, env={"LEM_GAP_BETWEEN_CYCLES_S": "3"})
    campaign = load_campaign(write_yaml("name: x\ngaps: {between_experiments_s: 4}\n")).config
    resolved = resolve_settings(settings, campaign)
    assert (resolved.gaps.between_experiments_s, resolved.gaps.between_cycles_s) == (4.0, 3.0)
    assert (
        resolved.record().sources.items()
        >= {
            "gaps.between_experiments_s": "campaign file",
            "gaps.between_cycles_s": "environment (LEM_GAP_BETWEEN_CYCLES_S)",
        }.items()
    )
    assert str(path) not in resolved.record().sources.values()


def test_manifest_records_the_settings_and_results_derive_co2(
    tmp_path: Path, write_yaml: Callable[..., Path]
) -> None:
    """facility_energy_j = energy_raw_j x PUE and co2_g from it, only where energy was
    measured; the settings that made them are in the manifest."""
    write_settings(tmp_path, FULL)
    settings = load_settings(tmp_path, env={})
    campaign = load_campaign(write_yaml("name: co2\ncycles: 1\ngrid:\n  batch_size: [1, 2]\n"))
    directory = create_campaign(campaign, tmp_path / "out", settings=settings)
    manifest = ManifestStore(directory).load()
    assert manifest.execution.settings == settings.record()
    assert "file-secret" not in (directory / "manifest.json").read_text()

    def energy(spec: ExperimentSpec) -> dict[str, object]:
        if spec.config.batch_size == 2:
            return {}  # not measured: every energy field null
        return {"energy": EnergyFigures(energy_method="test", energy_raw_j=3.6e6)}

    manifest = finish_campaign(directory, energy)
    frame = results_frame(directory, manifest).set_index("config.batch_size")
    assert frame.loc[1, "facility_energy_j"] == pytest.approx(3.6e6 * 1.5)
    assert frame.loc[1, "co2_g"] == pytest.approx(1.5 * 200)  # 1 kWh x PUE x 200 g/kWh
    assert pd.isna(frame.loc[2, "facility_energy_j"]) and pd.isna(frame.loc[2, "co2_g"])


def test_derived_energy_without_pue_or_carbon() -> None:
    assert derived_energy(3.6e6, None, 100.0) == {"facility_energy_j": None, "co2_g": 100.0}
    assert derived_energy(3.6e6, 1.2, None) == {"facility_energy_j": 3.6e6 * 1.2, "co2_g": None}
    assert derived_energy(None, 1.2, 100.0) == {"facility_energy_j": None, "co2_g": None}
    assert derived_energy(3.6e6, None, 0.0) == {"facility_energy_j": None, "co2_g": 0.0}
