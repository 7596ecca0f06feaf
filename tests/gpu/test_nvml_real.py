"""The measurement layer against a real GPU's NVML (run on the device machine)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.experiment import MeasurementConfig
from llenergymeasure.measure.energy import COUNTER, integrate_power, read_synced
from llenergymeasure.measure.nvml import NvmlGpu, nvml_session, visible_gpu_uuids
from llenergymeasure.measure.sampler import Sampler
from llenergymeasure.measure.session import MeasurementSession


@pytest.fixture
def torch_cuda() -> Any:
    import torch

    return torch


@pytest.fixture
def gpu0_uuid(torch_cuda: Any) -> str:
    text = str(torch_cuda.cuda.get_device_properties(0).uuid)
    return text if text.startswith("GPU-") else f"GPU-{text}"


def _busy(torch: Any, seconds: float) -> None:
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def test_torch_device_maps_to_an_nvml_gpu(gpu0_uuid: str) -> None:
    with nvml_session() as pynvml:
        assert gpu0_uuid in visible_gpu_uuids(pynvml)
        gpu = NvmlGpu(pynvml, gpu0_uuid)
        assert gpu.energy_mj() is not None


def test_counter_edges_sync_to_a_tick(gpu0_uuid: str) -> None:
    with nvml_session() as pynvml:
        gpu = NvmlGpu(pynvml, gpu0_uuid)
        reads = [read_synced([gpu])[gpu0_uuid] for _ in range(5)]
    assert all(r.synced for r in reads)
    # The counter ticks about every 100 ms; each read costs milliseconds.
    assert all(r.gap_s < 0.03 for r in reads), [r.gap_s for r in reads]
    ticks = [b.t_s - a.t_s for a, b in itertools.pairwise(reads)]
    assert all(0.02 < t < 0.3 for t in ticks), ticks


def test_sampler_records_power_at_its_rate(gpu0_uuid: str, torch_cuda: Any, tmp_path: Path) -> None:
    with nvml_session() as pynvml:
        gpu = NvmlGpu(pynvml, gpu0_uuid)
        with Sampler([gpu], 10.0) as sampler:
            _busy(torch_cuda, 2.0)
    rows = sampler.rows
    assert 15 <= len(rows) <= 25
    assert all(r.sample.power_avg_w and r.sample.power_avg_w > 10 for r in rows)
    sampler.write_parquet(tmp_path / "ts.parquet", rows[0].t_s)
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "ts.parquet")
    assert {"t_s", "phase", "power_w", "temperature_c", "sm_clock_mhz"} <= set(frame.columns)


def test_session_energy_matches_instant_power_integration(
    gpu0_uuid: str, torch_cuda: Any, tmp_path: Path
) -> None:
    config = MeasurementConfig(sampler_hz=50)
    with MeasurementSession(config, tmp_path) as session:
        session.attach([0])
        with session.sampling():
            _busy(torch_cuda, 0.5)
            with session.window():
                _busy(torch_cuda, 4.0)
        report = session.report(output_tokens=1000, n_requests=10)
    energy = report.energy
    assert energy.energy_method == COUNTER
    assert energy.energy_raw_j is not None and energy.energy_raw_j > 100
    assert energy.baseline_power_w is not None and energy.baseline_power_w > 10
    assert (
        energy.energy_adjusted_j is not None and 0 < energy.energy_adjusted_j < energy.energy_raw_j
    )
    assert session.sampler is not None
    series = session.sampler.series(gpu0_uuid, "power_instant_w")
    integrated = integrate_power(
        series, session.window_edges.start_s, session.window_edges.start_s + energy.energy_window_s
    )
    assert integrated is not None
    # 50 Hz instant power vs the counter: within a few percent (sensor paths differ).
    assert abs(integrated / energy.energy_raw_j - 1) < 0.05
    assert report.flags.short_window is True
    assert session.gpus[0].uuid == gpu0_uuid


def test_end_to_end_campaign_on_gpu_reports_energy(tmp_path: Path) -> None:
    campaign = tmp_path / "gpu.yaml"
    campaign.write_text(
        "name: gpu-smoke\ncycles: 1\nbase:\n  n_prompts: 8\n  max_output_tokens: 32\n"
        "  warmup: {runs: 1}\n"
        "  measurement: {baseline: {duration_s: 1.0}}\ngrid:\n  batch_size: [1, 8]\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llenergymeasure.cli",
            "campaign",
            str(campaign),
            "-o",
            str(tmp_path / "out"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in tmp_path.glob("out/*/*/cycle-1/result.json")]
    assert len(results) == 2
    for r in results:
        assert r["environment"]["device"].startswith("cuda")
        assert r["energy"]["energy_method"] == COUNTER
        assert r["energy"]["energy_raw_j"] > 0
        assert r["environment"]["gpus"][0]["uuid"].startswith("GPU-")
        assert r["timeseries_file"] == "timeseries.parquet"
