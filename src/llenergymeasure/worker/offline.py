"""The offline scenario (mode: offline): the prepared batches served in a measured window.

Order matters: pre-flight -> load + engine init (timed, outside the window) -> prompts
tokenised and batched -> idle baseline -> sampler on, GC collected then paused -> warm-up over
the window's own batch shapes -> synchronise -> GC collect -> energy start (at a counter tick)
-> serve the prepared batches, in whole passes until the window reaches min_window_s ->
synchronise -> energy stop (at a tick). Nothing else runs inside the window, and the warm-up
the window is compared with ran under the same conditions (sampler, collector paused).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from llenergymeasure.backends import get_backend
from llenergymeasure.backends.base import Backend, PreparedBatch, RequestOutput, Served
from llenergymeasure.config.experiment import WarmupConfig
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import LAUNCH_ENV, TIMESERIES_FILE
from llenergymeasure.datasets.select import select_prompts
from llenergymeasure.faults import crashpoint
from llenergymeasure.gc_pause import gc_paused
from llenergymeasure.measure.environment import snapshot
from llenergymeasure.measure.flops import total_flops
from llenergymeasure.measure.phase_split import split_energy
from llenergymeasure.measure.session import MeasurementSession, SideWindow, Window
from llenergymeasure.results.schema import (
    LatencyStats,
    OfflineRecord,
    PhaseSplit,
    PhaseTimes,
    WarmupRecord,
)
from llenergymeasure.worker.latency import latency_stats_of
from llenergymeasure.worker.passes import PassRecord, fill_window
from llenergymeasure.worker.run import Measured
from llenergymeasure.worker.warmup import (
    ratio_warnings,
    reference_passes,
    same_shape_cv,
    spread_warnings,
    warm_up,
    warmup_batches,
    window_ratio,
)

log = logging.getLogger("lem.worker")
W = TypeVar("W")


def run_offline(spec: ExperimentSpec) -> Measured:
    config = spec.config
    worker_start_s = _since_launch()
    # Importing the engine (torch + transformers: ~3 s on a 2-core CPU) is part of loading the
    # model, timed on its own. This worker's own modules are all imported by now, so what is
    # timed here is what the engine adds (~0 when a fork server preloaded it).
    t_import = time.perf_counter()
    backend_cls = get_backend(config.backend)
    engine_import_s = time.perf_counter() - t_import
    log.info("%s engine imported in %.2f s", config.backend, engine_import_s)
    out_dir = Path(spec.output_dir)

    with MeasurementSession(config.measurement, Path(spec.cache_dir)) as session:
        t0 = time.perf_counter()
        with backend_cls(config) as backend:
            model_load_s = time.perf_counter() - t0
            device = backend.device_description()
            log.info("model %s loaded in %.2f s on %s", config.model, model_load_s, device)
            t0 = time.perf_counter()
            backend.initialize()
            engine_init_s = time.perf_counter() - t0
            # Tokenising, truncating, padding and moving to the device happen here, before
            # the window: a huge prompt costs the window nothing (issue 14.3).
            t0 = time.perf_counter()
            prompts = select_prompts(config, Path(spec.base_dir), backend.tokenizer)
            batches = backend.prepare(prompts)
            prompt_prep_s = time.perf_counter() - t0
            session.attach(backend.cuda_devices())

            warm_set = warmup_batches(batches, _shape, config.warmup.pass_cover)
            warm_passes: list[Served] = []
            # One collection before the warm-up, none after: the collector stays paused over
            # warm-up and window alike, so the window is compared with passes run under its own
            # conditions, and no collection idles the device between the two (issue 20).
            gc.collect()
            with session.sampling(), gc_paused():
                warmup = warm_up(lambda: warm_passes.append(backend.serve(warm_set)), config.warmup)
                # Repetition serves the energy reading; with no GPU energy source (CPU runs,
                # tests) one pass is the whole window.
                min_window_s = config.measurement.window_minimum_s if session.readers else 0.0
                limits = (spec.time_limit_s, t_import)
                measured = _measure(backend, session, batches, min_window_s, limits)
                prefill = (
                    _passes(
                        backend,
                        batches,
                        _prefill(backend, session),
                        min_window_s,
                        0,
                        limits,
                        "prefill",
                    )
                    if config.measurement.phase_split
                    else None
                )
            t_after = time.perf_counter()
            outputs = measured.filled.outputs
            duration_s = measured.window.duration_s

            peak = backend.peak_memory()
            shape = backend.model_shape()
            engine_settings = backend.engine_settings()
            environment = snapshot(device, backend.library_versions(), session.gpus, session.driver)
        output_tokens = sum(o.output_tokens for o in outputs)
        report = session.report(output_tokens, len(outputs))
        warm_shapes = [_shape(b) for b in warm_set] if warmup.runs else []
        window_shapes = [_shape(b) for b in batches]
        ratio, spread, reference_runs = _compare(
            warm_shapes, warm_passes, config.warmup, window_shapes, measured
        )
        quality = session.quality(
            min_window_s=min_window_s, passes=measured.filled.passes, latency_ratio=ratio
        )
        has_series = session.write_timeseries(out_dir / TIMESERIES_FILE)

    input_tokens = sum(o.input_tokens for o in outputs)
    flops = (
        total_flops(shape, [(o.input_tokens, o.output_tokens) for o in outputs]) if shape else None
    )
    last_pass = warm_passes[-1] if warm_passes else Served([], [], [])
    phases = PhaseTimes(
        worker_start_s=worker_start_s,
        engine_import_s=engine_import_s,
        model_load_s=model_load_s,
        engine_init_s=engine_init_s,
        prompt_prep_s=prompt_prep_s,
        warmup_s=warmup.duration_s,
        pre_window_gap_s=measured.gap_s,
        window_s=duration_s,
        after_window_s=time.perf_counter() - t_after,
    )
    return Measured(
        environment=environment,
        model_load_s=model_load_s,
        window_s=duration_s,
        window_unix_s=(measured.window.start_unix_s, measured.window.end_unix_s),
        n_requests=len(outputs),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        request_latencies_s=[o.latency_s for o in outputs],
        energy=report.energy,
        flags=report.flags,
        quality=quality,
        warnings=[
            *warmup.warnings(config.warmup),
            *ratio_warnings(ratio),
            *spread_warnings(spread),
            *report.warnings,
            *(f"prefill pass: {w}" for w in (prefill[0].warnings if prefill else [])),
        ],
        phases_s=phases,
        section=OfflineRecord(
            engine_import_s=engine_import_s,
            warmup=WarmupRecord(
                runs=warmup.runs,
                converged=warmup.converged,
                final_cv=warmup.final_cv,
                latencies_s=warmup.latencies_s,
                cover=config.warmup.pass_cover,
                batch_shapes=[list(s) for s in warm_shapes],
                last_run_batch_latencies_s=last_pass.batch_latencies_s,
                last_run_batch_host_cpu_s=last_pass.batch_host_cpu_s,
                reference_runs=reference_runs,
            ),
            warmup_s=warmup.duration_s,
            passes=measured.filled.passes,
            ttft=_engine_latency([o.ttft_s for o in outputs]),
            inter_token_latency=_engine_latency([o.inter_token_latency_s for o in outputs]),
            peak_memory_mb=peak.megabytes if peak else None,
            peak_memory_source=peak.source if peak else None,
            model_parameters=shape.total_params if shape else None,
            flops_estimate=flops,
            achieved_tflops=flops / duration_s / 1e12 if flops is not None else None,
            window_batch_shapes=[list(s) for s in window_shapes],
            window_batch_latencies_s=measured.served.batch_latencies_s,
            window_batch_host_cpu_s=measured.served.batch_host_cpu_s,
            window_host_steal_s=quality.host_steal_s,
            window_same_shape_latency_cv=spread,
            phase_split=(
                _phase_split(prefill, report.energy.energy_raw_j, outputs) if prefill else None
            ),
            engine_settings=engine_settings,
        ),
        sampler_hz=config.measurement.sampler_hz if has_series else None,
        sampler_busy_fraction=session.sampler_busy_fraction(),
        timeseries_file=TIMESERIES_FILE if has_series else None,
    )


@dataclass(frozen=True)
class WindowRun:
    window: Window
    filled: PassRecord
    served: Served
    """Every batch's latency and host CPU time in the window (outputs are in `filled`)."""
    gap_s: float
    """From the warm-up's end to the window's start."""


def _measure(
    backend: Backend,
    session: MeasurementSession,
    batches: list[PreparedBatch],
    min_window_s: float,
    limits: tuple[float | None, float],
) -> WindowRun:
    """The measured window, opened right after the warm-up (an idle device slows the next
    host-bound batch)."""
    warm_end = time.perf_counter()
    backend.reset_peak_memory()
    run = WindowRun(*_passes(backend, batches, session.window(), min_window_s, warm_end, limits))
    session.window_cut_by_time_limit = run.filled.cut_by_time_limit
    return run


@contextlib.contextmanager
def _prefill(backend: Backend, session: MeasurementSession) -> Iterator[SideWindow]:
    """measurement.phase_split: a window of its own where each request gets one token."""
    with backend.prefill_only(), session.side_window("prefill") as side:
        yield side


def _passes(
    backend: Backend,
    batches: list[PreparedBatch],
    window: AbstractContextManager[W],
    min_window_s: float,
    idle_since: float,
    limits: tuple[float | None, float],
    what: str = "measured window",
) -> tuple[W, PassRecord, Served, float]:
    """The prepared batches in whole passes inside `window` until it reaches min_window_s (or
    limits' time limit, counted from the engine import), and nothing else: the window, the
    passes, every batch's latency and host CPU time, and the device's idle from idle_since to
    the window's start. The caller has paused the garbage collector."""
    backend.synchronize()
    served = Served([], [], [])
    with window as edges:
        gap_s = time.perf_counter() - idle_since
        crashpoint("worker.generate")
        filled = fill_window(
            lambda: _one_pass(backend, batches, served),
            min_window_s,
            time_limit_s=limits[0],
            elapsed_before_s=time.perf_counter() - limits[1],
        )
    log.info("%s: %d requests in %d pass(es)", what, len(filled.outputs), filled.passes)
    return edges, filled, served, gap_s


def _one_pass(backend: Backend, batches: list[PreparedBatch], into: Served) -> list[RequestOutput]:
    """Every prepared batch once, to the device's end; each batch's latency and host CPU
    time are added to `into`."""
    served = backend.serve(batches)
    backend.synchronize()
    into.batch_latencies_s.extend(served.batch_latencies_s)
    into.batch_host_cpu_s.extend(served.batch_host_cpu_s)
    return served.outputs


def _phase_split(
    prefill: tuple[SideWindow, PassRecord, Served, float],
    window_energy_j: float | None,
    outputs: list[RequestOutput],
) -> PhaseSplit:
    side, filled, _, _ = prefill
    return split_energy(
        window_energy_j=window_energy_j,
        window_requests=len(outputs),
        input_tokens=sum(o.input_tokens for o in outputs),
        output_tokens=sum(o.output_tokens for o in outputs),
        prefill_energy_j=side.energy_j,
        prefill_requests=len(filled.outputs),
        prefill_output_tokens=sum(o.output_tokens for o in filled.outputs),
        prefill_window_s=side.duration_s,
        prefill_passes=filled.passes,
    )


def _compare(
    warm_shapes: list[tuple[int, ...]],
    warm_passes: list[Served],
    warmup: WarmupConfig,
    window_shapes: list[tuple[int, ...]],
    measured: WindowRun,
) -> tuple[float | None, float | None, int]:
    """The window against the settled warm-up passes (ratio), the spread of its same-shape
    batches, and how many passes the reference took."""
    reference = reference_passes(warm_passes, warmup)
    shapes = window_shapes * measured.filled.passes
    latencies = measured.served.batch_latencies_s
    ratio = window_ratio(warm_shapes, [p.batch_latencies_s for p in reference], shapes, latencies)
    log.info("window / settled warm-up batch latency, same shapes: %s", ratio)
    return ratio, same_shape_cv(shapes, latencies), len(reference)


def _shape(batch: PreparedBatch) -> tuple[int, ...]:
    return batch.shape


def _since_launch() -> float | None:
    """Seconds since the runner launched this worker (it sets LAUNCH_ENV); None if unset."""
    launched = os.environ.get(LAUNCH_ENV)
    try:
        return time.time() - float(launched) if launched else None
    except ValueError:
        return None


def _engine_latency(values: list[float | None]) -> LatencyStats | None:
    """Stats of a per-request engine metric; None unless the engine gave it for every request."""
    known = [v for v in values if v is not None]
    return latency_stats_of(known) if known and len(known) == len(values) else None
