"""Reports: the figures' content (known values in, the same values drawn), 'no energy
measured' instead of zeros, the Pareto front, and a self-contained report.html."""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from unit_results import finish_campaign

from llenergymeasure.api import load_results
from llenergymeasure.config import load_campaign
from llenergymeasure.config.campaign import StatisticsConfig
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import ManifestStore
from llenergymeasure.results import plots
from llenergymeasure.results.aggregate import summarize, swept_parameters
from llenergymeasure.results.report import without_unused_settings, write_report
from llenergymeasure.results.schema import EnergyFigures, MeasurementFlags, QualityRecord

WriteYaml = Callable[..., Path]
GRID = """\
name: report
cycles: 2
grid:
  batch_size: [1, 4]
  precision: [fp32, bf16]
"""
PER_EXPERIMENT = StatisticsConfig()


def energy_for(spec: ExperimentSpec) -> dict[str, object]:
    """bf16 at batch 4 is both cheapest and fastest; fp32 at batch 1 the worst of both."""
    b, fp32 = spec.config.batch_size, spec.config.precision == "fp32"
    per_token = (2.0 if fp32 else 1.5) / b + spec.cycle / 100
    return {
        "energy": EnergyFigures(
            energy_method="test",
            energy_raw_j=per_token * 80,
            energy_raw_per_output_token_j=per_token,
        ),
        "output_tokens_per_s": 10.0 * b * (1.0 if fp32 else 1.5) + spec.cycle,
    }


def make_campaign(
    tmp_path: Path, write_yaml: WriteYaml, overrides_for: Callable[..., dict[str, object]]
) -> Path:
    directory = create_campaign(
        load_campaign(write_yaml(GRID)), tmp_path / "out", settings=UserSettings()
    )
    finish_campaign(directory, overrides_for)
    return directory


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# ------------------------------------------------------------------------------ the figures


def test_pareto_front() -> None:
    points = [(1.0, 10.0), (2.0, 20.0), (1.5, 5.0), (3.0, 20.0), (0.5, 1.0), (1.0, 10.0)]
    # (1.5, 5) is beaten by (1, 10); (3, 20) by (2, 20); equal points do not beat each other
    assert plots.pareto_front(points) == [4, 0, 5, 1]
    assert plots.pareto_front([]) == []
    assert plots.pareto_front([(1.0, 1.0)]) == [0]


def test_parameter_figure_draws_the_means_and_cis(tmp_path: Path, write_yaml: WriteYaml) -> None:
    loaded = load_results(make_campaign(tmp_path, write_yaml, energy_for))
    per_experiment = summarize(loaded.runs, PER_EXPERIMENT)
    fig = plots.parameter_figure(per_experiment, "batch_size", ["precision", "batch_size"])
    energy_ax, throughput_ax, _ = fig.axes
    # errorbar() groups its data line and bars in a container carrying the legend label
    lines = {c.get_label(): c.lines[0] for c in energy_ax.containers}
    assert set(lines) == {"precision=fp32", "precision=bf16"}  # every parameter named
    bf16 = lines["precision=bf16"]
    # swept values are evenly spaced categories (a tick each), lines nudged apart
    assert [round(x) for x in bf16.get_xdata()] == [0, 1]
    assert [t.get_text() for t in energy_ax.get_xticklabels()] == ["1", "4"]
    expected = [np.mean([1.5 / b + c / 100 for c in (1, 2)]) for b in (1, 4)]
    assert np.allclose(bf16.get_ydata(), expected)
    assert len(throughput_ax.get_lines()) > 0


def test_energy_panels_say_no_energy_instead_of_zeros(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    loaded = load_results(make_campaign(tmp_path, write_yaml, lambda spec: {}))
    per_experiment = summarize(loaded.runs, PER_EXPERIMENT)
    energy_ax, throughput_ax, latency_ax = plots.parameter_figure(
        per_experiment, "precision", ["precision", "batch_size"]
    ).axes
    assert energy_ax.texts[0].get_text() == "no energy measured"
    assert len(energy_ax.get_lines()) == 0 and len(energy_ax.collections) == 0
    assert len(throughput_ax.containers) == 2 and len(latency_ax.containers) == 2
    (pareto_ax,) = plots.pareto_figure(per_experiment, {}).axes
    assert "no energy measured" in [t.get_text() for t in pareto_ax.texts]
    assert len(pareto_ax.get_lines()) == 0
    spread_throughput, spread_energy = plots.cycle_spread_figure(loaded.runs, {}).axes
    assert "no energy measured" in [t.get_text() for t in spread_energy.texts]
    scatters = [c for c in spread_throughput.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 2  # one per cycle


def test_pareto_figure_marks_the_front(tmp_path: Path, write_yaml: WriteYaml) -> None:
    loaded = load_results(make_campaign(tmp_path, write_yaml, energy_for))
    per_experiment = summarize(loaded.runs, PER_EXPERIMENT)
    (ax,) = plots.pareto_figure(per_experiment, {}).axes
    (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    # bf16 batch 4 is cheapest and fastest: it alone is the front
    expected_energy = np.mean([1.5 / 4 + c / 100 for c in (1, 2)])
    assert np.allclose(front.get_xdata(), [expected_energy])


def test_timeseries_figure_draws_the_file_values() -> None:
    t = np.arange(0.0, 4.0, 0.5)
    frame = pd.DataFrame(
        {"t_s": t, "phase": ["warmup"] * 3 + ["measured"] * 5, "power_w": 100.0 + 10 * t}
    )
    (ax,) = plots.timeseries_figure({"run A": frame}).axes
    warmup, measured = ax.get_lines()
    assert list(warmup.get_xdata()) == [0.0, 0.5, 1.0]
    assert list(measured.get_ydata()) == [115.0, 120.0, 125.0, 130.0, 135.0]
    assert ax.get_title() == "run A"
    two_gpus = pd.concat([frame.assign(gpu_index=0), frame.assign(gpu_index=1, power_w=50.0)])
    (ax,) = plots.timeseries_figure({"run B": two_gpus}).axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["GPU 0 warmup", "GPU 0 measured", "GPU 1 warmup", "GPU 1 measured"]
    assert set(ax.get_lines()[3].get_ydata()) == {50.0}
    (empty,) = plots.timeseries_figure({}).axes
    assert "no power time-series recorded" in [x.get_text() for x in empty.texts]


# ----------------------------------------------------------------------------- report.html


def test_report_files_are_self_contained(tmp_path: Path, write_yaml: WriteYaml) -> None:
    directory = make_campaign(tmp_path, write_yaml, energy_for)
    loaded = load_results(directory)
    first = loaded.manifest.entries[0]
    t = np.arange(0.0, 2.0, 0.1)
    pd.DataFrame(
        {"t_s": t, "phase": np.where(t < 1, "warmup", "measured"), "power_w": 200.0 + t}
    ).to_parquet(directory / Path(first.exp_path).parent / "timeseries.parquet")

    path = write_report(loaded)

    assert path == directory / "report" / "report.html"
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert pngs == [
        "compare_forest.png",
        "cycle_spread.png",
        "metrics_vs_batch_size.png",
        "metrics_vs_precision.png",
        "pareto.png",
        "power_timeseries.png",
    ]
    page = path.read_text(encoding="utf-8")
    # self-contained: nothing fetched, every PNG embedded byte for byte
    assert not re.search(r"(src|href)=['\"](?!data:)", page)
    assert "http://" not in page and "https://" not in page
    embedded = [base64.b64decode(m) for m in re.findall(r"base64,([A-Za-z0-9+/=]+)", page)]
    assert sorted(embedded) == sorted((path.parent / p).read_bytes() for p in pngs)
    for data in embedded:
        width, height = png_size(data)
        assert width > 400 and height > 300
    assert loaded.manifest.campaign_id in page
    assert "interleaved" in page
    assert "fewer than 10 runs" not in page  # the intervals keep their coverage at 2 runs
    assert "95% CI (Student t, over the n runs of each row)" in page
    assert "No energy was measured" not in page
    bf16_4 = summarize(loaded.runs, PER_EXPERIMENT)
    mean = bf16_4[
        (bf16_4["precision"] == "bf16")
        & (bf16_4["batch_size"] == 4)
        & (bf16_4["metric"] == "energy_raw_per_output_token_j")
    ]["mean"].iloc[0]
    assert f"{mean:.4g}" in page


def test_report_on_a_cpu_campaign_says_energy_was_not_measured(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    loaded = load_results(make_campaign(tmp_path, write_yaml, lambda spec: {}))
    page = write_report(loaded, tmp_path / "elsewhere").read_text(encoding="utf-8")
    assert "No energy was measured in this campaign" in page
    assert "Not measured in any run: energy_raw_j" in page  # named, not a column of blanks
    assert (tmp_path / "elsewhere" / "pareto.png").is_file()


def test_report_timeseries_choice(tmp_path: Path, write_yaml: WriteYaml) -> None:
    directory = make_campaign(tmp_path, write_yaml, energy_for)
    loaded = load_results(directory)
    first = loaded.manifest.entries[0]
    bad = directory / Path(first.exp_path).parent / "timeseries.parquet"
    pd.DataFrame({"t_s": [0.0], "watts": [1.0]}).to_parquet(bad)
    page = write_report(loaded, timeseries=[first.experiment_id[:12]]).read_text(encoding="utf-8")
    assert "lacks column(s) phase, power_w; not drawn" in page
    assert f"experiment {first.experiment_id} has no power time-series" in page
    with pytest.raises(ConfigError, match="--timeseries 'pytorch-' matches 4 experiments"):
        write_report(loaded, timeseries=["pytorch-"])
    with pytest.raises(ConfigError, match="matches no experiment"):
        write_report(loaded, timeseries=["nope"])


def _host_bound(cycle_1: bool) -> QualityRecord:
    return QualityRecord(
        status="check" if cycle_1 else "ok",
        window_s=10.0,
        min_window_s=10.0,
        window_meets_minimum=True,
        passes=1,
        gpu_busy_share=0.25 if cycle_1 else 0.9,
        host_bound=cycle_1,
    )


@pytest.mark.parametrize(
    ("in_cycle_1", "words"),
    [
        (lambda c: {"flags": MeasurementFlags(throttled=c)}, "had GPU clocks slowed"),
        (lambda c: {"quality": _host_bound(c)}, "were host-bound (quality.host_bound"),
    ],
)
def test_report_flags_throttled_and_host_bound_runs(
    tmp_path: Path,
    write_yaml: WriteYaml,
    in_cycle_1: Callable[[bool], dict[str, object]],
    words: str,
) -> None:
    directory = make_campaign(tmp_path, write_yaml, lambda spec: in_cycle_1(spec.cycle == 1))
    page = write_report(load_results(directory)).read_text(encoding="utf-8")
    assert f"4 run(s) {words}" in page


FOUR_PARAMETERS = """\
name: four
cycles: 2
grid:
  batch_size: [1, 8]
  max_output_tokens: [8, 16]
  precision: [fp32, bf16]
  decoding: [{strategy: greedy}, {strategy: sampling, temperature: 0.7}]
"""


def _outside_every_axes(fig: Figure) -> None:
    """Each figure legend is drawn clear of every axes (nothing covers the data)."""
    FigureCanvasAgg(fig).draw()  # type: ignore[no-untyped-call]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    assert len(fig.legends) == 1
    box = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))


def test_report_of_a_four_parameter_grid_reads(tmp_path: Path, write_yaml: WriteYaml) -> None:
    directory = create_campaign(
        load_campaign(write_yaml(FOUR_PARAMETERS)), tmp_path / "out", settings=UserSettings()
    )
    finish_campaign(directory, energy_for)
    loaded = load_results(directory)
    report = write_report(loaded)
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    # only swept dimensions get axes: once greedy runs have no temperature, 0.7 is all there is
    assert "metrics_vs_decoding_temperature.png" not in pngs
    assert "metrics_vs_decoding_strategy.png" in pngs
    runs = without_unused_settings(loaded.runs)
    per_experiment = summarize(runs, PER_EXPERIMENT)
    swept = swept_parameters(runs)
    # a greedy run has no temperature: never drawn (or labelled) at the default 1.0
    greedy = runs["config.decoding.strategy"] == "greedy"
    assert runs.loc[greedy, "config.decoding.temperature"].isna().all()
    assert runs.loc[~greedy, "config.decoding.temperature"].eq(0.7).all()
    assert "decoding.temperature" not in swept
    fig = plots.parameter_figure(per_experiment, "batch_size", swept)
    assert len(fig.axes) == 2 * 3  # one row per facet value (2), three metrics
    titles = {ax.get_title().split("\n")[1] for ax in fig.axes}
    assert titles == {"out tok: 8", "out tok: 16"}
    _outside_every_axes(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # every parameter named
    assert labels == [
        f"precision={p} strategy={s}" for p in ("bf16", "fp32") for s in ("greedy", "sampling")
    ]
    for column in range(3):  # a metric's panels share one y scale across the rows
        assert fig.axes[column].get_ylim() == fig.axes[3 + column].get_ylim()

    def styles(figure: Figure) -> set[str]:  # each series' data line (an errorbar's first)
        return {c.lines[0].get_linestyle() for ax in figure.axes for c in ax.containers}

    assert styles(fig) == {"-"}  # numbers: joined
    by_precision = plots.parameter_figure(per_experiment, "precision", swept)
    assert styles(by_precision) == {"None"}  # categories: points, never joined
    # swept values evenly spaced, one tick each: 1 and 8 never run together into "18"
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for ax in fig.axes[1:3]:
        ticks = ax.get_xticklabels()
        assert [t.get_text() for t in ticks] == ["1", "8"]
        first, second = (t.get_window_extent(renderer) for t in ticks)
        assert second.x0 - first.x1 > 100  # pixels apart
    spread = plots.cycle_spread_figure(runs, {})
    _outside_every_axes(spread)
    assert len(spread.axes[0].get_yticklabels()) == 16  # a row per experiment


def test_report_lists_failures_and_the_quality_of_every_run(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    """Issue 28.4: failed runs listed and marked, a quality section with each run's status,
    reasons and the numbers behind them, and metrics measured in no run left out of the
    summary's columns (named below it instead)."""

    def short_window_in_cycle_2(spec: ExperimentSpec) -> dict[str, object]:
        bad = spec.cycle == 2
        reasons = ["window of 4.00 s is under its minimum of 10 s"] if bad else []
        return {
            "quality": QualityRecord(
                status="check" if bad else "ok",
                reasons=reasons,
                window_s=4.0,
                min_window_s=10.0,
                window_meets_minimum=not bad,
                passes=1,
            )
        }

    directory = make_campaign(tmp_path, write_yaml, short_window_in_cycle_2)
    store = ManifestStore(directory)
    manifest = store.load()
    lost = manifest.entries[0].experiment_id
    for entry in manifest.entries:
        if entry.experiment_id == lost:
            entry.status, entry.error, entry.result_path = "failed", "BackendError: boom", None
    store.save(manifest)
    page = write_report(load_results(directory)).read_text(encoding="utf-8")
    label = "batch=1 precision=fp32"
    for cycle in (1, 2):
        assert f"{label} cycle {cycle}: failed: BackendError: boom" in page
    assert "failed: no finished run" in page
    quality = page[page.index("Quality of each measurement") :]
    assert quality.count("window of 4.00 s is under its minimum of 10 s") == 3
    assert quality.count("<td>4</td><td>10</td>") == 6  # window s, min window s per run
    summary = page[page.index("Summary per experiment") : page.index("Quality of each")]
    assert "check (1 of 2 runs)" in summary
    assert "<th>energy_raw_j</th>" not in summary and "Not measured in any run: energy" in summary
    assert summary.index("output_tokens_per_s") < summary.index("latency_p50_s")
