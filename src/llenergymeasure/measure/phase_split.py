"""Prefill / decode energy split from a prefill-only pass (measurement.phase_split).

The measured window serves every request in full. A second window then serves the same
requests with one output token each: its energy per request is what prefill costs a request
(plus one decode step, which is how the first token is made anyway). Scaled to the window's
request count it is the window's prefill energy; the remainder is decode.
"""

from __future__ import annotations

from llenergymeasure.results.schema import PhaseSplit


def split_energy(
    *,
    window_energy_j: float | None,
    window_requests: int,
    input_tokens: int,
    output_tokens: int,
    prefill_energy_j: float | None,
    prefill_requests: int,
    prefill_output_tokens: int,
    prefill_window_s: float,
    prefill_passes: int,
) -> PhaseSplit:
    """The split of one window's raw energy, given the prefill pass's own energy."""
    decode_tokens = max(0, output_tokens - window_requests)
    prefill_j = decode_j = None
    if window_energy_j is not None and prefill_energy_j is not None and prefill_requests:
        prefill_j = prefill_energy_j / prefill_requests * window_requests
        decode_j = window_energy_j - prefill_j
    return PhaseSplit(
        method="prefill_pass",
        prefill_window_s=prefill_window_s,
        prefill_passes=prefill_passes,
        prefill_requests=prefill_requests,
        prefill_output_tokens=prefill_output_tokens,
        prefill_window_energy_j=prefill_energy_j,
        energy_prefill_j=prefill_j,
        energy_decode_j=decode_j,
        energy_per_input_token_j=_per(prefill_j, input_tokens),
        energy_per_output_token_j=_per(decode_j, decode_tokens),
        decode_tokens=decode_tokens,
    )


def _per(energy_j: float | None, count: int) -> float | None:
    return energy_j / count if energy_j is not None and count else None
