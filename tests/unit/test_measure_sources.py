"""measurement.energy_source: zeus / codecarbon read over exactly the measured window.

Zeus and CodeCarbon measure GPU energy through NVML, so without a GPU their reading cannot run
here: a scripted source stands in for it (start/stop order and figures), while the missing
extra, which this environment really lacks unless installed, is checked for real.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from measure_fakes import FakeClock, ScriptedGpu
from test_errors import one_line, run_cli
from test_measure_session import LOAD_A, exact, fake_session, run_window

from llenergymeasure.config.energy_sources import EXTRAS, missing_extra
from llenergymeasure.config.experiment import ExperimentConfig, MeasurementConfig
from llenergymeasure.errors import ConfigError
from llenergymeasure.measure.energy import COUNTER
from llenergymeasure.measure.session import MeasurementSession

UNINSTALLED = [s for s, module in EXTRAS.items() if importlib.util.find_spec(module) is None]


class ScriptedSource:
    """An EnergySource that reports the window it saw on the session's clock, at a power."""

    def __init__(self, clock: FakeClock, watts: float | None, name: str = "zeus") -> None:
        self.name, self.version, self.clock, self.watts = name, "9.9.9", clock, watts
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    def start(self) -> None:
        self.started_at = self.clock()

    def stop_j(self) -> float | None:
        self.stopped_at = self.clock()
        assert self.started_at is not None
        return None if self.watts is None else self.watts * (self.stopped_at - self.started_at)


def test_source_reads_exactly_the_window_and_nvml_is_kept_beside_it(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A)
    session = fake_session(tmp_path, clock, [gpu])
    source = ScriptedSource(clock, 400.0)
    session.source = source
    report = run_window(session, clock)
    e = report.energy
    edges = session.window_edges
    # started after the start edge's counter read, stopped before the end edge's
    assert (source.started_at, source.stopped_at) == (edges.start_s, edges.end_s)
    assert (e.energy_source, e.energy_source_version, e.energy_method) == ("zeus", "9.9.9", "zeus")
    assert e.energy_raw_j == exact(400.0 * 12.0)
    assert e.energy_nvml_j == exact(4640.0)  # the counter's figure over the same window
    assert e.per_gpu[0].method == COUNTER
    assert e.energy_adjusted_j == exact(400.0 * 12.0 - 80.0 * 12.0)
    assert e.energy_raw_per_output_token_j == exact(400.0 * 12.0 / 400)


def test_nvml_is_named_as_the_source_by_default(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    report = run_window(fake_session(tmp_path, clock, [ScriptedGpu("GPU-a", clock, LOAD_A)]), clock)
    assert (report.energy.energy_source, report.energy.energy_nvml_j) == ("nvml", None)


def test_a_source_without_a_figure_leaves_energy_null_and_says_so(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    session = fake_session(tmp_path, clock, [ScriptedGpu("GPU-a", clock, LOAD_A)])
    session.source = ScriptedSource(clock, None, name="codecarbon")
    report = run_window(session, clock)
    assert report.energy.energy_raw_j is None
    assert report.energy.energy_adjusted_j is None
    assert report.energy.energy_nvml_j == exact(4640.0)
    assert any("codecarbon gave no GPU energy" in w for w in report.warnings)


@pytest.mark.parametrize("source", UNINSTALLED)
def test_missing_extra_is_a_config_error_naming_it(tmp_path: Path, source: str) -> None:
    message = missing_extra(source)
    assert message is not None
    assert f"llenergymeasure[{source}]" in message and "energy_source" in message
    config = MeasurementConfig(energy_source=source)  # type: ignore[arg-type]
    session = MeasurementSession(config, tmp_path / "cache", readers=[])
    with pytest.raises(ConfigError, match=rf"llenergymeasure\[{source}\]"), session:
        pass  # refused on entry: before any model is loaded


@pytest.mark.parametrize("source", UNINSTALLED)
def test_local_campaign_with_a_missing_extra_exits_2(tmp_path: Path, source: str) -> None:
    (tmp_path / "c.yaml").write_text(
        f"name: src\nbase:\n  model: builtin:tiny-llama\n  measurement:\n"
        f"    energy_source: {source}\n"
    )
    proc = run_cli("campaign", "c.yaml", "--runner", "local", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    text = one_line(proc.stderr + proc.stdout)
    assert f"pip install 'llenergymeasure[{source}]'" in text
    assert "Traceback" not in text
    assert not any(p.is_dir() for p in (tmp_path / "results").glob("*"))


def test_energy_source_is_validated_and_keeps_ids_when_unset() -> None:
    with pytest.raises(ValueError, match="energy_source"):
        MeasurementConfig(energy_source="rapl")  # type: ignore[arg-type]
    plain = ExperimentConfig()
    nvml = ExperimentConfig(measurement=MeasurementConfig(energy_source="nvml"))
    assert "energy_source" not in plain.model_dump_json(exclude_none=True)
    assert plain.measurement.energy_source is None and nvml.measurement.energy_source == "nvml"
    assert missing_extra("nvml") is None
