"""The FLOPs estimate against a hand computation, and the model shape of the built-in model."""

from __future__ import annotations

import pytest

from llenergymeasure.backends.base import ModelShape
from llenergymeasure.measure.flops import request_flops, total_flops

SHAPE = ModelShape(total_params=1_500, non_embedding_params=1_000, n_layers=2, attention_dim=128)


def per_token_sum(shape: ModelShape, input_tokens: int, output_tokens: int) -> int:
    """The docstring's definition, token by token: at context position c (1-based, the token
    itself included) a token costs 2*N for the weights plus 4*L*c*d for attention."""
    n, layers, d = shape.non_embedding_params, shape.n_layers, shape.attention_dim
    return sum(2 * n + 4 * layers * c * d for c in range(1, input_tokens + output_tokens + 1))


def test_request_flops_by_hand() -> None:
    # 10 in + 5 out = 15 tokens: weights 2 * 1000 * 15 = 30_000;
    # attention 2 * 2 layers * 128 * 15 * 16 = 122_880
    assert request_flops(SHAPE, 10, 5) == 152_880
    assert request_flops(SHAPE, 10, 5) == per_token_sum(SHAPE, 10, 5)
    assert request_flops(SHAPE, 0, 0) == 0


@pytest.mark.parametrize(("i", "o"), [(1, 0), (0, 1), (7, 3), (128, 64), (1000, 1)])
def test_request_flops_matches_the_per_token_definition(i: int, o: int) -> None:
    assert request_flops(SHAPE, i, o) == per_token_sum(SHAPE, i, o)


def test_total_flops_sums_requests_and_uses_no_embedding_params() -> None:
    requests = [(10, 5), (3, 4), (0, 2)]
    assert total_flops(SHAPE, requests) == sum(per_token_sum(SHAPE, i, o) for i, o in requests)
    assert total_flops(SHAPE, []) == 0
    bigger_vocab = ModelShape(9_999_999, 1_000, 2, 128)  # embeddings never count
    assert total_flops(bigger_vocab, requests) == total_flops(SHAPE, requests)


def test_pytorch_model_shape_of_the_builtin_model(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from llenergymeasure.backends.pytorch import PyTorchBackend
    from llenergymeasure.config import ExperimentConfig

    config = ExperimentConfig.model_validate(
        {"model": "builtin:tiny-llama", "pytorch": {"device": "cpu"}}
    )
    with PyTorchBackend(config) as backend:
        shape = backend.model_shape()
        n_unique = sum(p.numel() for p in backend.model.parameters())
        assert backend.cuda_devices() == []  # CPU: no GPU to measure
    # vocab 512, hidden 128, 2 layers, 2 heads x 64, MLP 256, tied embeddings:
    # embeddings 512*128 = 65_536; per layer q,k,v,o 4*128*128 + MLP 3*128*256 + 2 norms 2*128
    # = 164_096; final norm 128. Total 65_536 + 2*164_096 + 128 = 393_856.
    assert shape == ModelShape(
        total_params=393_856,
        non_embedding_params=393_856 - 512 * 128,  # tied lm_head: one embedding matrix
        n_layers=2,
        attention_dim=128,
    )
    assert shape.total_params == n_unique
