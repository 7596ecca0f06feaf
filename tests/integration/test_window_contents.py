"""What the measured window holds, on the real tiny model run by the worker in this process:
only the engine's work (prompts are tokenised before it opens), and only batch shapes the
warm-up already ran."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.backends.common import load_tokenizer
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.measure.hoststat import steal_s
from llenergymeasure.models import resolve_model
from llenergymeasure.results.schema import ExperimentResult, schema_fingerprint
from llenergymeasure.worker.run import run_experiment

pytestmark = pytest.mark.integration
HUGE_PROMPT_BYTES = 3_000_000


def run(tmp_path: Path, prompts: list[str], **config: Any) -> ExperimentResult:
    """One experiment on the tiny model over `prompts` (a JSONL file), as a worker runs it."""
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    experiment = ExperimentConfig.model_validate(
        {
            "prompts": {"source": "jsonl", "path": str(source)},
            "n_prompts": len(prompts),
            "max_output_tokens": 2,
            "measurement": {"sampler_hz": 0},
            **config,
        }
    )
    spec = ExperimentSpec(
        schema_fingerprint=schema_fingerprint(),
        experiment_id="window",
        campaign_id="window_20260101T000000Z",
        campaign_name="window",
        cycle=1,
        total_cycles=1,
        attempt=1,
        output_dir=str(tmp_path / "out"),
        base_dir=str(tmp_path),
        cache_dir=str(tmp_path / ".cache"),
        config=experiment,
    )
    return run_experiment(spec)


def test_window_does_not_pay_for_tokenising_a_huge_prompt(tmp_path: Path) -> None:
    huge = "energy " * (HUGE_PROMPT_BYTES // 7)
    tokenizer = load_tokenizer(resolve_model("builtin:tiny-llama"))
    t0 = time.perf_counter()
    tokenizer([huge], truncation=True, max_length=16)
    tokenise_s = time.perf_counter() - t0

    result = run(tmp_path, [huge, "short"], batch_size=1, max_input_tokens=16)

    assert result.phases_s is not None
    assert result.offline.window_batch_shapes[0] == [1, 16]  # truncated before serving
    assert result.input_tokens <= 16 + 4
    # Tokenising that line alone costs tokenise_s; the window served both prompts in a fraction.
    assert result.measured_duration_s < tokenise_s / 3, (result.measured_duration_s, tokenise_s)
    assert result.phases_s.prompt_prep_s > tokenise_s / 3


@pytest.mark.parametrize(
    ("cover", "window_shapes_all_warmed"), [("shapes", True), ("first_batch", False)]
)
def test_window_runs_only_batch_shapes_the_warm_up_ran(
    tmp_path: Path, cover: str, window_shapes_all_warmed: bool
) -> None:
    short, long = "Energy per token", "Energy per token of a longer prompt " * 4
    result = run(
        tmp_path, [short, short, long, long], batch_size=2, warmup={"runs": 2, "cover": cover}
    )

    window = {tuple(s) for s in result.offline.window_batch_shapes}
    warmed = {tuple(s) for s in result.offline.warmup.batch_shapes}
    assert len(window) == 2  # two padded lengths
    assert window.issubset(warmed) is window_shapes_all_warmed
    assert len(result.offline.warmup.latencies_s) == 2
    assert len(result.offline.warmup.last_run_batch_latencies_s) == len(
        result.offline.warmup.batch_shapes
    )
    assert len(result.offline.window_batch_latencies_s) == 2
    assert result.offline.warmup.reference_runs == 1  # the second pass; the first paid the start-up
    # The serving thread's CPU time, batch by batch, in both phases.
    assert len(result.offline.window_batch_host_cpu_s) == 2
    assert len(result.offline.warmup.last_run_batch_host_cpu_s) == len(
        result.offline.warmup.batch_shapes
    )
    assert all(c > 0 for c in result.offline.window_batch_host_cpu_s)
    assert result.offline.window_same_shape_latency_cv is None  # each shape ran once in the window

    assert result.quality is not None
    ratio = result.quality.window_to_warmup_latency_ratio
    assert ratio is not None
    assert ratio > 0
    assert ("warm-up's" in " ".join(result.quality.reasons)) is (ratio > 1.10)
    # on a CPU: the window's own items are there, the energy items null (nothing measured)
    quality = result.quality
    assert (quality.passes, quality.window_s) == (result.offline.passes, result.measured_duration_s)
    assert (quality.min_window_s, quality.window_meets_minimum) == (0.0, True)
    assert quality.edge_uncertainty_j is None
    assert quality.counter_update_period_s is None
    assert quality.status == ("check" if quality.reasons else "ok")
    # host noise: the worker's CPU time over the window (it served every batch, at least the
    # serving thread's time), steal as /proc/stat says, no GPU share without a GPU
    assert quality.host_cpu_s is not None
    assert quality.host_cpu_s >= sum(result.offline.window_batch_host_cpu_s) * 0.99
    assert result.offline.window_host_steal_s == quality.host_steal_s
    assert (quality.host_steal_s is None) is (steal_s() is None)
    assert (quality.gpu_busy_share, quality.host_bound) == (None, None)


def test_warm_up_and_window_both_run_with_the_collector_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like with like: the passes the window is compared with ran under its conditions; and
    the one collection comes before the warm-up, so none (0.2 s on the H200 host) idles the
    device between warm-up and window, where it slowed the next host-bound batch."""
    from llenergymeasure.backends.pytorch import PyTorchBackend
    from llenergymeasure.worker import offline as worker_offline

    events: list[str] = []
    serve, collect = PyTorchBackend.serve, gc.collect

    def spy_serve(self: PyTorchBackend, batches: Any) -> Any:
        events.append("serve, collector on" if gc.isenabled() else "serve")
        return serve(self, batches)

    def spy_collect(*args: Any) -> int:
        events.append("collect")
        return collect(*args)

    monkeypatch.setattr(PyTorchBackend, "serve", spy_serve)
    monkeypatch.setattr(worker_offline.gc, "collect", spy_collect)
    assert gc.isenabled()
    result = run(tmp_path, ["Energy per token"] * 2, batch_size=2, warmup={"runs": 2})

    # two warm-up passes, then the window's one pass
    assert events == ["collect", "serve", "serve", "serve"]
    assert gc.isenabled()
    assert result.phases_s is not None
    assert result.phases_s.pre_window_gap_s is not None
    assert result.phases_s.pre_window_gap_s >= 0


def test_phase_split_runs_a_prefill_pass_of_the_same_requests(tmp_path: Path) -> None:
    prompts = ["Energy per token", "Energy per token of a longer prompt " * 3, "a b c"]
    result = run(
        tmp_path,
        prompts,
        batch_size=2,
        max_output_tokens=4,
        decoding={"ignore_eos": True},
        measurement={"sampler_hz": 0, "phase_split": True},
    )
    split = result.offline.phase_split
    assert split is not None
    assert split.method == "prefill_pass"
    # the same requests again, one output token each, in a window of its own (one pass on a
    # CPU: repetition serves GPU energy only)
    assert (split.prefill_passes, split.prefill_requests) == (1, 3)
    assert split.prefill_output_tokens == 3
    assert split.prefill_window_s > 0
    assert result.output_tokens == 3 * 4  # the main window still generated the full length
    assert split.decode_tokens == 3 * 4 - 3
    # no energy on a CPU: every energy of the split is null, never 0
    assert split.prefill_window_energy_j is None
    assert split.energy_prefill_j is split.energy_decode_j is None
    assert split.energy_per_input_token_j is split.energy_per_output_token_j is None
    # host CPU energy: RAPL per socket where this host exposes it, else the reason
    host = result.energy.host
    assert host is not None
    assert host.readable or (host.reason or "").startswith("not readable:")
