"""Telling failures apart: out of memory (real exception types of torch and the messages of
the engines), an interrupt, the rest; and the crash points that make processes fail for real."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import torch

from llenergymeasure.errors import BackendError, ConfigError
from llenergymeasure.faults import crashpoint
from llenergymeasure.oom import is_out_of_memory, log_says_out_of_memory
from llenergymeasure.worker.__main__ import error_record

VLLM_KV = (
    "To serve at least one request with the model's max seq len (4096), (2.00 GiB KV cache is "
    "needed, which is larger than the available KV cache memory (1.50 GiB). Try increasing "
    "`gpu_memory_utilization`"
)


def _raised_from(cause: BaseException) -> BackendError:
    """A backend error raised from cause, as backends translate engine errors."""
    try:
        try:
            raise cause
        except BaseException as e:
            raise BackendError("generation failed") from e
    except BackendError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        torch.OutOfMemoryError("out of memory"),
        RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be ..."),
        RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        ),
        ValueError("No available memory for the cache blocks. Try increasing ..."),
        ValueError(VLLM_KV),
        RuntimeError("[TensorRT-LLM][ERROR] CUDA runtime error in cudaMalloc: out of memory"),
        MemoryError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_out_of_memory_is_recognised_also_through_a_wrapping_error(exc: BaseException) -> None:
    assert is_out_of_memory(exc)
    assert is_out_of_memory(_raised_from(exc))


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("Expected all tensors to be on the same device"),
        ValueError("max_model_len must be positive"),
        BackendError("model directory /x does not exist"),
        KeyboardInterrupt(),
    ],
)
def test_other_errors_are_not_out_of_memory(exc: BaseException) -> None:
    assert not is_out_of_memory(exc)
    assert not is_out_of_memory(_raised_from(exc))


def test_a_log_says_out_of_memory_only_with_an_engines_own_words() -> None:
    log = (
        "INFO loading\nERROR EngineCore failed\n"
        "ValueError: No available memory for the cache blocks.\n"
    )
    assert log_says_out_of_memory(log) == "ValueError: No available memory for the cache blocks."
    # a warning that merely mentions running out of memory is not one
    assert (
        log_says_out_of_memory("WARNING lower max_num_seqs to avoid running out of memory") is None
    )


def test_worker_error_records_carry_the_category() -> None:
    at = datetime.now(timezone.utc)
    oom = error_record(_raised_from(torch.cuda.OutOfMemoryError("CUDA out of memory.")), None)
    assert (oom.category, oom.error_type) == ("oom", "BackendError")
    assert error_record(KeyboardInterrupt(), None).category == "interrupted"
    assert error_record(ConfigError("bad"), None).category == "config"
    assert error_record(RuntimeError("boom"), None).category == "crash"
    assert oom.at >= at


# ---------------------------------------------------------------------------- crash points


def test_crashpoint_is_inert_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEM_CRASHPOINT", raising=False)
    for _ in range(3):
        crashpoint("worker.generate")


def test_crashpoint_fires_on_the_nth_hit_where_its_condition_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEM_CRASHPOINT", "unit.oom:2:oom@LEM_ATTEMPT=1&LEM_CYCLE=3")
    monkeypatch.setenv("LEM_ATTEMPT", "1")
    monkeypatch.setenv("LEM_CYCLE", "2")
    crashpoint("unit.oom")
    crashpoint("unit.oom")  # the 2nd hit, but LEM_CYCLE is not 3
    monkeypatch.setenv("LEM_CRASHPOINT", "unit.oom2:2:oom@LEM_ATTEMPT=1")
    crashpoint("unit.oom2")
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"injected at unit\.oom2"):
        crashpoint("unit.oom2")
    crashpoint("unit.oom2")  # the 3rd hit: no more


def test_unknown_action_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEM_CRASHPOINT", "unit.bad:1:explode")
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        crashpoint("unit.bad")


@pytest.mark.parametrize(
    ("action", "returncode"),
    [("kill", -signal.SIGKILL), ("segv", -signal.SIGSEGV), ("exit", 0)],
)
def test_crashpoint_actions_really_end_the_process(action: str, returncode: int) -> None:
    code = (
        "from llenergymeasure.faults import crashpoint\n"
        "crashpoint('unit.p')\nprint('after', flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"LEM_CRASHPOINT": f"unit.p:1:{action}", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == returncode, proc.stderr
    assert "after" not in proc.stdout
