"""The server scenario (mode: server): the experiment config turned into a server command
line and request fields, run through run_server_experiment; what it measured goes to the
bracket (worker/run.py) with the server record, which holds each level (collation makes each
level a row).

The core's counts are sums over the levels' steady-state windows; the server's launch is its
load phase (model_load_s); no engine is imported in this process.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

from llenergymeasure.backends import get_server
from llenergymeasure.backends.common import load_tokenizer, model_path
from llenergymeasure.config.server import ServerSpec
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.config.trace import read_trace, trace_path
from llenergymeasure.datasets import sized_prompt
from llenergymeasure.datasets.select import select_prompts
from llenergymeasure.errors import BackendError, ServerStoppedError
from llenergymeasure.measure.environment import snapshot
from llenergymeasure.measure.quality import SHORT_WINDOW_S, MeasuredQuality, assess
from llenergymeasure.measure.session import MeasurementSession
from llenergymeasure.results.schema import (
    EnergyFigures,
    Environment,
    MeasurementFlags,
    PhaseTimes,
    QualityRecord,
    ServerRecord,
)
from llenergymeasure.worker.run import Measured
from llenergymeasure.worker.serving.run import Load, ServerRun, Trace, run_server_experiment
from llenergymeasure.worker.serving.server import free_port

log = logging.getLogger("lem.worker")

BASELINE_STATE = "server up, model loaded, no requests"


def truncated(prompts: list[str], tokenizer: Any, max_tokens: int) -> list[str]:
    """Prompts cut to max_input_tokens as text (the server tokenises them itself)."""
    out = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        out.append(p if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]))
    return out


def _trace(server: ServerSpec, base_dir: Path, prompts: list[str], tokenizer: Any) -> Trace:
    """The trace's requests: its own prompt text, or the prompt source's i-th prompt (cycled)
    repeated and cut to the line's input_tokens; offsets over trace_speed."""
    requests = read_trace(trace_path(str(server.trace), base_dir))
    sized = functools.cache(lambda i, n: sized_prompt(tokenizer, prompts[i], n))
    texts = [r.prompt or sized(i % len(prompts), r.input_tokens) for i, r in enumerate(requests)]
    offsets = [r.t_s / server.trace_speed for r in requests]
    return Trace(offsets, texts, [r.output_tokens for r in requests])


def run_server_mode(spec: ExperimentSpec) -> Measured:
    config = spec.config
    server = config.server
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request in worker.log
    assert server is not None  # ExperimentConfig refuses mode: server without it
    out_dir = Path(spec.output_dir)
    path = model_path(config.model)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(path)
    prompts = truncated(
        select_prompts(config, Path(spec.base_dir), tokenizer), tokenizer, config.max_input_tokens
    )
    prompt_prep_s = time.perf_counter() - t0
    trace = _trace(server, Path(spec.base_dir), prompts, tokenizer) if server.trace else None
    port = free_port()
    adapter = get_server(config.backend)
    command = adapter.command(config, path, port)
    log.info("server mode: %s", server.url or " ".join(command))
    with MeasurementSession(config.measurement, Path(spec.cache_dir)) as session:
        # the idle baseline is taken with the server up (run_server_experiment), not here
        gpus = list(server.gpus) if server.gpus is not None else None
        session.attach(gpus, baseline=False)
        load = Load("", path, prompts, config.max_output_tokens, adapter.request_fields(config))
        load.trace = trace
        device = f"{len(session.gpus)} GPU(s)" if session.gpus else "cpu"
        environment = snapshot(device, {}, session.gpus, session.driver)  # engine versions too
        try:
            run = run_server_experiment(
                server,
                command,
                port,
                load,
                out_dir,
                readers=session.readers,
                baseline_s=config.measurement.baseline.duration_s,
                gpus=[g.index for g in session.gpus if g.index is not None],
            )
        except ServerStoppedError as e:
            # the levels finished before it stopped are measured: the bracket writes them
            partial = e.partial if isinstance(e.partial, ServerRun) else None
            e.partial = (
                _measured(partial, environment, prompt_prep_s)
                if partial is not None and any(not lv.failed for lv in partial.record.levels)
                else None
            )
            raise
    return _measured(run, environment, prompt_prep_s)


def _measured(run: ServerRun, environment: Environment, prompt_prep_s: float) -> Measured:
    record = run.record
    done = [lv for lv in record.levels if not lv.failed]
    if not done:
        reasons = "; ".join(f"{lv.level}: {lv.failed_reason}" for lv in record.levels)
        raise BackendError(f"every server level failed ({reasons})")
    window_s = sum(lv.window_s or 0.0 for lv in done)
    out_tokens = sum(lv.window_output_tokens or 0.0 for lv in done)
    in_tokens = sum(lv.window_input_tokens or 0 for lv in done)
    n_req = sum(lv.window_requests or 0 for lv in done)
    energy = _energy(done, record.idle_power_w, out_tokens, n_req)
    warnings = [f"level {lv.level}: {w}" for lv in record.levels for w in lv.warnings]
    if energy.energy_raw_j is None:
        warnings.append("no GPU energy source: energy fields are null")
    spans = [e for e, lv in zip(run.level_unix_s, record.levels, strict=True) if not lv.failed]
    return Measured(
        environment=environment,
        model_load_s=record.launch_s,
        window_s=window_s,
        window_unix_s=(spans[0][0], spans[-1][1]),
        n_requests=n_req,
        input_tokens=in_tokens,
        output_tokens=out_tokens,
        request_latencies_s=run.e2e_s,  # every completed request's: `done` is not empty
        energy=energy,
        flags=MeasurementFlags(
            short_window=window_s < SHORT_WINDOW_S if energy.energy_raw_j else None
        ),
        quality=_quality(record, window_s, energy.energy_raw_j is not None),
        warnings=warnings,
        phases_s=PhaseTimes(
            model_load_s=record.launch_s, prompt_prep_s=prompt_prep_s, window_s=window_s
        ),
        section=record,
    )


def _quality(record: ServerRecord, window_s: float, energy_measured: bool) -> QualityRecord:
    """The quality record of a server experiment (issue 17.5): the shared items over its
    levels' windows together, plus each level's own doubts (its warnings: a short window
    or under half its level, a load generator that fell behind) and failed levels; for
    server.url, a GPU that NVML showed more than one process on."""
    baseline = record.idle_power_w is not None
    quality = assess(
        MeasuredQuality(
            window_start_s=0.0,
            window_end_s=window_s,
            baseline_expected=energy_measured,
            baseline_source="measured" if baseline else None,
            baseline_age_s=0.0 if baseline else None,
            baseline_state=BASELINE_STATE if baseline else None,
        ),
        min_window_s=0.0,
        passes=1,
        latency_ratio=None,
    )
    shared = [
        f"{g.gpu}: {len(g.pids)} processes used the GPU (pid {', '.join(map(str, g.pids))}); "
        "lem did not launch server.url's server, and all of them are counted in its energy"
        for g in record.gpu_processes
        if not record.launched_by_lem and len(g.pids) > 1
    ]
    reasons = [*quality.reasons, *shared, *(d for lv in record.levels for d in lv.doubts())]
    return quality.model_copy(update={"status": "check" if reasons else "ok", "reasons": reasons})


def _energy(
    levels: list[Any], idle_w: float | None, out_tokens: float, n_req: int
) -> EnergyFigures:
    raw = [lv.energy_window_j for lv in levels]
    if any(v is None for v in raw):
        return EnergyFigures()
    total = float(sum(raw))
    adj = [lv.energy_window_adjusted_j for lv in levels]
    adjusted = float(sum(adj)) if all(v is not None for v in adj) else None
    return EnergyFigures(
        energy_method="nvml_energy_counter",
        energy_raw_j=total,
        energy_window_s=sum(lv.window_s or 0.0 for lv in levels),
        baseline_power_w=idle_w,
        baseline_state=BASELINE_STATE,
        baseline_method="energy counter over the idle period",
        baseline_source="measured",
        baseline_age_s=0.0,
        energy_adjusted_j=adjusted,
        energy_raw_per_output_token_j=total / out_tokens if out_tokens else None,
        energy_adjusted_per_output_token_j=adjusted / out_tokens
        if adjusted is not None and out_tokens
        else None,
        energy_raw_per_request_j=total / n_req if n_req else None,
        energy_adjusted_per_request_j=adjusted / n_req if adjusted is not None and n_req else None,
    )
