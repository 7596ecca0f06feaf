"""The small interface every inference backend implements."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.results.schema import MemorySource


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs estimate (measure/flops.py) needs from a model."""

    total_params: int
    non_embedding_params: int
    n_layers: int
    attention_dim: int


@dataclass(frozen=True)
class RequestOutput:
    """One request as the engine served it. ttft_s and inter_token_latency_s come from the
    engine's own request metrics; None where the engine reports none."""

    input_tokens: int
    output_tokens: int
    latency_s: float
    ttft_s: float | None = None
    inter_token_latency_s: float | None = None


@dataclass(frozen=True)
class PreparedBatch:
    """One batch as the engine takes it: tokenised, truncated (and for PyTorch padded and on
    the device) before the measured window opens, so the window holds only the engine's work."""

    shape: tuple[int, ...]
    """What the engine plans kernels for: (rows, padded length) for PyTorch, (rows, longest
    prompt) for the engines that batch continuously. Warm-up runs every distinct shape."""
    inputs: Any
    """The engine's own input object (a BatchEncoding, a list of token-id prompts)."""


class Server(ABC):
    """A backend's own OpenAI-compatible server, for `mode: server`: the command that starts
    it and the request fields it takes. Named by its descriptor's `server` (`module:Class`),
    imported by the worker only; the worker launches, loads and measures it."""

    @abstractmethod
    def command(self, config: ExperimentConfig, model_path: str, port: int) -> list[str]:
        """The engine's documented serving command, bound to 127.0.0.1:port, the config's
        engine settings as its flags."""

    def request_fields(self, config: ExperimentConfig) -> dict[str, object]:
        """Decoding settings as OpenAI completion-request fields (a server that takes more
        adds its own)."""
        d = config.decoding
        fields: dict[str, object] = {"seed": config.seed}
        if d.strategy == "greedy":
            return fields | {"temperature": 0.0}
        return fields | {"temperature": d.temperature, "top_p": d.top_p}


def cli_flags(settings: dict[str, Any]) -> list[str]:
    """Settings as a server's command-line flags: `--name value`, `--switch`/`--no-switch`."""
    out: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            out += [flag, str(value)]
    return out


@dataclass(frozen=True)
class Served:
    """What serve() returns: every request's output, each batch's wall time, and the CPU time
    the serving thread spent in it (near the wall time: the host, not the device, set the pace)."""

    outputs: list[RequestOutput]
    batch_latencies_s: list[float]
    batch_host_cpu_s: list[float]


@dataclass(frozen=True)
class PeakMemory:
    megabytes: float
    source: MemorySource


class Backend(ABC):
    """Load a model once, then generate for lists of prompts. Used as a context manager so the
    engine and its device memory are released even when generation fails."""

    name: ClassVar[str]

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config

    @abstractmethod
    def load(self) -> None:
        """Load weights and tokenizer onto the device (timed, outside the energy window)."""

    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """A Hugging Face tokenizer for the loaded model (used for synthetic prompts)."""

    @abstractmethod
    def prepare(self, prompts: list[str]) -> list[PreparedBatch]:
        """Tokenise and truncate the prompts and cut them into batch_size batches, as the
        engine will take them (outside the window: a huge prompt costs nothing there)."""

    @abstractmethod
    def run_batch(self, batch: PreparedBatch) -> list[RequestOutput]:
        """Serve one prepared batch with the configured decoding, synchronised at its end;
        one output per request."""

    def initialize(self) -> None:
        """Engine start-up that is not the workload's warm-up (first-call set-up), run at the
        end of loading and timed as its own phase. Nothing by default."""
        return None

    def serve(self, batches: Sequence[PreparedBatch]) -> Served:
        """Serve every batch in order, timing each."""
        outputs: list[RequestOutput] = []
        latencies: list[float] = []
        host_cpu: list[float] = []
        for batch in batches:
            c0, t0 = time.thread_time(), time.perf_counter()
            outputs.extend(self.run_batch(batch))
            latencies.append(time.perf_counter() - t0)
            host_cpu.append(time.thread_time() - c0)
        return Served(outputs, latencies, host_cpu)

    @contextlib.contextmanager
    def prefill_only(self) -> Iterator[None]:
        """Serve with one output token per request: the prefill pass of
        measurement.phase_split. Every backend reads max_output_tokens from self.config at
        each call, so a swapped config is all it takes."""
        saved = self.config
        decoding = saved.decoding.model_copy(update={"min_output_tokens": None})
        self.config = saved.model_copy(update={"max_output_tokens": 1, "decoding": decoding})
        try:
            yield
        finally:
            self.config = saved

    def generate(self, prompts: list[str]) -> list[RequestOutput]:
        """Prepare and serve all prompts (tests, benchmarks; the worker times the two apart)."""
        return self.serve(self.prepare(prompts)).outputs

    @abstractmethod
    def synchronize(self) -> None:
        """Wait until queued device work has finished (window edges must be exact)."""

    @abstractmethod
    def cuda_devices(self) -> list[int] | None:
        """CUDA device numbers of the GPUs in use, as this process numbers them (0 is the
        first visible device): [] on CPU, None when the engine cannot say (then every GPU
        visible to the process is measured). The worker's measurement maps them to GPUs."""

    @abstractmethod
    def model_shape(self) -> ModelShape | None:
        """Parameter and layer counts for the FLOPs estimate; None if unknown."""

    @abstractmethod
    def device_description(self) -> str:
        """Human-readable device, e.g. 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""

    @abstractmethod
    def reset_peak_memory(self) -> None:
        """Start peak-memory tracking afresh (called just before the measured window)."""

    @abstractmethod
    def peak_memory(self) -> PeakMemory | None:
        """Peak memory since the last reset, or None where it cannot be read."""

    @abstractmethod
    def library_versions(self) -> dict[str, str]:
        """Versions of the engine libraries, for the environment record."""

    @abstractmethod
    def engine_settings(self) -> dict[str, Any]:
        """Settings as the loaded engine reports them (its defaults resolved): the record that
        the configured values reached it."""

    @abstractmethod
    def close(self) -> None:
        """Free the model and its device memory."""

    def __enter__(self) -> Backend:
        try:
            self.load()
        except BaseException:
            self.close()  # a half-started engine (processes, device memory) is released too
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
