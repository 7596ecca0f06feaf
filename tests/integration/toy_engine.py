"""The toy backend's engine: a deterministic recurrent model over byte tokens, in numpy. Each
output token is an argmax over the vocabulary of the state times an embedding matrix, then a
state update: real work that grows with width, tokens and batch."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from toy_backend import ToySettings

from llenergymeasure.backends.base import (
    Backend,
    ModelShape,
    PeakMemory,
    PreparedBatch,
    RequestOutput,
)

VOCAB = 256  # one token per byte of the prompt


class ToyEngine(Backend):
    name = "toy"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.settings = config.backend_settings(ToySettings)
        self.embeddings: np.ndarray[Any, Any] | None = None

    def load(self) -> None:
        rng = np.random.default_rng(self.config.seed)
        self.embeddings = rng.standard_normal((VOCAB, self.settings.width))

    @property
    def tokenizer(self) -> Any:
        return lambda text: list(text.encode())

    def prepare(self, prompts: list[str]) -> list[PreparedBatch]:
        ids = [list(p.encode())[: self.config.max_input_tokens] for p in prompts]
        size = self.config.batch_size
        return [
            PreparedBatch((len(rows), max(map(len, rows))), rows)
            for rows in (ids[i : i + size] for i in range(0, len(ids), size))
        ]

    def run_batch(self, batch: PreparedBatch) -> list[RequestOutput]:
        assert self.embeddings is not None, "generate before load"
        t0 = time.perf_counter()
        outputs = [self._generate(row) for row in batch.inputs]
        latency_s = time.perf_counter() - t0
        return [RequestOutput(len(row), len(out), latency_s) for row, out in outputs]

    def _generate(self, row: list[int]) -> tuple[list[int], list[int]]:
        assert self.embeddings is not None
        state = np.tanh(self.embeddings[row].mean(axis=0))
        out: list[int] = []
        for _ in range(self.config.max_output_tokens):
            token = int(np.argmax(self.embeddings @ state))
            out.append(token)
            state = np.tanh(state + self.embeddings[token])
        return row, out

    def synchronize(self) -> None:
        """CPU work: done when run_batch returns."""

    def cuda_devices(self) -> list[int] | None:
        return []

    def model_shape(self) -> ModelShape | None:
        params = VOCAB * self.settings.width
        return ModelShape(params, 0, 1, self.settings.width)

    def device_description(self) -> str:
        return "cpu (toy engine)"

    def reset_peak_memory(self) -> None:
        """Nothing tracked."""

    def peak_memory(self) -> PeakMemory | None:
        return None

    def library_versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def engine_settings(self) -> dict[str, Any]:
        assert self.embeddings is not None
        return {"vocab": self.embeddings.shape[0], "width": self.embeddings.shape[1]}

    def close(self) -> None:
        self.embeddings = None
