"""Entry point `lem-worker exp.json` (also `python -m llenergymeasure.worker exp.json`).

Exit codes: 0 result.json written; 1 the experiment failed (error.json written); 2 the spec
itself is unusable; 130 interrupted. SIGTERM (what the orchestrator sends on Ctrl+C, and what
`docker stop` sends) is handled like SIGINT: the experiment unwinds, so the backend frees the
GPU and ends its engine processes, and error.json says it was interrupted. Import-safe:
inference engines that spawn processes re-import this module.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import sys
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import ERROR_FILE, HOST_PID_ENV, RESULT_FILE
from llenergymeasure.errors import BackendError, ConfigError, LemError, MeasurementError
from llenergymeasure.faults import crashpoint
from llenergymeasure.oom import is_out_of_memory
from llenergymeasure.results.schema import (
    ErrorCategory,
    ErrorRecord,
    ExperimentResult,
    schema_fingerprint,
)

log = logging.getLogger("lem.worker")

# Before any engine imports huggingface_hub (lazily, in run_experiment; after this module in
# the fork servers' preload), which reads it once. Only worker processes run this module: a
# library user's own environment is left alone. A worker's output is a log file, where
# progress bars are carriage-return noise, and transformers' bars each take a tqdm
# multiprocessing lock whose semaphore a worker left to the resource tracker, with a "leaked
# semaphore" warning in every log. HF_HUB_DISABLE_PROGRESS_BARS=0 keeps them.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def load_spec(path: Path) -> ExperimentSpec:
    try:
        spec = ExperimentSpec.model_validate_json(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read experiment spec {path}: {e}") from e
    except ValidationError as e:
        raise ConfigError(f"{path} is not a valid experiment spec: {e}") from e
    if spec.schema_fingerprint != schema_fingerprint():
        raise ConfigError(
            f"{path} was written by a host with schema fingerprint {spec.schema_fingerprint}, "
            f"this worker has {schema_fingerprint()}: install the same llenergymeasure version "
            "on both sides (or rebuild the image)"
        )
    return spec


def error_record(exc: BaseException, spec: ExperimentSpec | None) -> ErrorRecord:
    categories: dict[type[LemError], ErrorCategory] = {
        ConfigError: "config",
        BackendError: "backend",
        MeasurementError: "measurement",
    }
    category: ErrorCategory
    if isinstance(exc, KeyboardInterrupt):
        category = "interrupted"
    elif is_out_of_memory(exc):
        category = "oom"
    else:
        category = next((c for t, c in categories.items() if isinstance(exc, t)), "crash")
    return ErrorRecord(
        experiment_id=spec.experiment_id if spec else None,
        cycle=spec.cycle if spec else None,
        attempt=spec.attempt if spec else None,
        category=category,
        error_type=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        traceback="".join(traceback.format_exception(exc)),
        at=datetime.now(timezone.utc),
    )


def _die_with_parent() -> None:
    """Linux: if the orchestrator is SIGKILLed, take this worker down too (no orphans)."""
    parent = os.environ.get("LEM_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)
    host = os.environ.get(HOST_PID_ENV)
    if host and host != parent:
        _die_with_host(int(host))


def _die_with_host(pid: int) -> None:
    """A forked worker's parent is the fork server, which outlives a SIGKILLed orchestrator
    by its interpreter's shutdown (1-3 s with torch loaded, seen on this 2-core machine):
    long enough for a short run to finish and write a result no orchestrator collates. So
    the worker watches the orchestrator itself (a pidfd) and dies with it, its group too."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)  # gone already
    except OSError:  # no pidfd (Linux < 5.3): the fork server's exit still takes us down
        return

    def watch() -> None:
        select.select([fd], [], [])
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="lem-host-watch", daemon=True).start()


def beside_finished(out_dir: Path, force: bool) -> Path:
    """Where this run writes: out_dir, unless it already holds a finished result.json, which a
    by-hand run must not overwrite (the manifest and results.csv point at it): then a new
    subfolder beside it, said on stderr. force: overwrite anyway (issue 14 point 5)."""
    existing = out_dir / RESULT_FILE
    if force or not _finished(existing):
        return out_dir
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = out_dir / f"rerun_{stamp}"
    print(
        f"lem-worker: {existing} is a finished result; not overwriting it (--force does). "
        f"This run writes to {target}",
        file=sys.stderr,
    )
    return target


def _orchestrated(spec: ExperimentSpec) -> bool:
    """This run is the attempt its orchestrator started (the job environment names it): it
    writes where it was told. The orchestrator cleared the directory before starting it, so a
    result found there now is an earlier attempt's, left by a worker that outlived its killed
    orchestrator; this attempt is the one the manifest records."""
    return os.environ.get("LEM_CAMPAIGN_ID") == spec.campaign_id and os.environ.get(
        "LEM_ATTEMPT"
    ) == str(spec.attempt)


def _finished(path: Path) -> bool:
    try:
        return not ExperimentResult.model_validate_json(path.read_bytes()).partial
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    if len(args) != 1 or args[0] in {"-h", "--help"}:
        print("usage: lem-worker [--force] EXP_JSON", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    _die_with_parent()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind and clean up, as Ctrl+C
    # CUDA then numbers GPUs as NVML does, so CUDA_VISIBLE_DEVICES indices mean the same GPU.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    # Said in the log: a forked worker's /proc environ is its fork server's, not its own.
    log.info(
        "GPUs: CUDA_VISIBLE_DEVICES=%s CUDA_DEVICE_ORDER=%s",
        os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
        os.environ["CUDA_DEVICE_ORDER"],
    )
    path = Path(args[0])
    spec: ExperimentSpec | None = None
    try:
        spec = load_spec(path)
        out_dir = beside_finished(Path(spec.output_dir), force or _orchestrated(spec))
        spec = spec.model_copy(update={"output_dir": str(out_dir)})
        out_dir.mkdir(parents=True, exist_ok=True)
        from llenergymeasure.worker.run import run_experiment

        result = run_experiment(spec)
        crashpoint("worker.before_result")
        write_text_atomic(out_dir / RESULT_FILE, result.model_dump_json(indent=2))
        log.info("wrote %s", out_dir / RESULT_FILE)
        crashpoint("worker.after_result")
        return 0
    except BaseException as exc:
        out_dir = Path(spec.output_dir) if spec else path.parent
        if isinstance(exc, KeyboardInterrupt):
            log.warning("interrupted: the experiment was unwound (backend closed), no result")
            crashpoint("worker.interrupted")
        record = error_record(exc, spec)
        try:
            write_text_atomic(out_dir / ERROR_FILE, record.model_dump_json(indent=2))
        except OSError:
            log.exception("could not write %s", out_dir / ERROR_FILE)
        log.error("experiment failed: %s: %s", record.error_type, record.message)
        if not isinstance(exc, LemError):
            log.error("%s", record.traceback)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        return 2 if spec is None else 1


def entry() -> NoReturn:
    """`lem-worker` and `python -m llenergymeasure.worker`: main, then a fast exit."""
    _exit_now(main())


def _exit_now(code: int) -> NoReturn:
    """Leave without the interpreter's teardown of torch and transformers (1-2 s per experiment
    on a 2-core machine, waited for by the orchestrator). Everything the worker started (engine,
    sampler thread, NVML) was closed by its context managers before main returned and
    result.json is fsync'd; a multiprocessing child still alive means an engine left one, so
    then the normal exit runs, whose handlers end it."""
    import multiprocessing

    if multiprocessing.active_children():
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
