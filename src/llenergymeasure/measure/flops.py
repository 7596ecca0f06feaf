"""Forward-pass FLOPs, as reference metadata (an estimate, never a measurement).

Per token at context position c: 2·N for the weights (N = parameters without embeddings), plus
4·L·c·d for attention (QK^T and AV over c cached positions, L layers, d = heads × head_dim).
A request with I input and O output tokens therefore costs
2·N·(I+O) + 2·L·d·(I+O)·(I+O+1). Padding and recomputation are not counted.
"""

from __future__ import annotations

from typing import Protocol


class Shape(Protocol):
    """What the estimate needs from a model (backends.base.ModelShape is one: a backend
    describes its model, and measurement never imports a backend)."""

    @property
    def non_embedding_params(self) -> int: ...
    @property
    def n_layers(self) -> int: ...
    @property
    def attention_dim(self) -> int: ...


def request_flops(shape: Shape, input_tokens: int, output_tokens: int) -> float:
    tokens = input_tokens + output_tokens
    weights = 2.0 * shape.non_embedding_params * tokens
    attention = 2.0 * shape.n_layers * shape.attention_dim * tokens * (tokens + 1)
    return weights + attention


def total_flops(shape: Shape, requests: list[tuple[int, int]]) -> float:
    """Sum over (input_tokens, output_tokens) pairs."""
    return sum(request_flops(shape, i, o) for i, o in requests)
