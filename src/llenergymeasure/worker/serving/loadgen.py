"""Load generator: our own arrival schedule, streaming /v1/completions over httpx.

Every request records its scheduled and actual send time (the lag is the generator's, not the
server's), first-token time (first chunk that carries text), every chunk's time and its end.
Token counts are the server's own (`usage` with stream_options.include_usage): a streamed chunk
is a text delta, not a token. Bounded in count and in time: nothing is sent after `duration_s`
and every request is cut at `request_timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx


@dataclass
class RequestRecord:
    index: int
    scheduled_s: float
    send_s: float = float("nan")
    first_token_s: float | None = None
    end_s: float | None = None
    chunk_times_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    max_tokens: int | None = None

    @property
    def lag_s(self) -> float:
        return self.send_s - self.scheduled_s

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_s is not None and self.completion_tokens is not None


async def _one(
    client: httpx.AsyncClient, url: str, body: dict[str, object], rec: RequestRecord, t0: float
) -> None:
    clock = time.monotonic
    try:
        rec.send_s = clock() - t0
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                rec.error = f"HTTP {resp.status_code}: {text}"
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                now = clock() - t0
                msg = json.loads(data)
                choices = msg.get("choices") or []
                if choices and choices[0].get("text"):
                    rec.chunk_times_s.append(now)
                    if rec.first_token_s is None:
                        rec.first_token_s = now
                usage = msg.get("usage")
                if usage:
                    rec.prompt_tokens = usage.get("prompt_tokens")
                    rec.completion_tokens = usage.get("completion_tokens")
        rec.end_s = clock() - t0
        if rec.completion_tokens is None:
            rec.error = "server sent no usage (stream_options.include_usage unsupported?)"
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as e:
        rec.error = f"{type(e).__name__}: {e}"


SPIN_S = 0.002
"""The last stretch before a send is spent yielding to the event loop rather than in one timed
sleep, whose wake-up the selector rounds to whole milliseconds (and the OS delays further)."""


async def _until(t: float) -> None:
    """Return at monotonic time t, other tasks running meanwhile."""
    while (left := t - time.monotonic()) > 0:
        await asyncio.sleep(left - SPIN_S if left > SPIN_S else 0)


async def run_level(
    base_url: str,
    model: str,
    prompts: Sequence[str],
    max_tokens: int | Sequence[int],
    *,
    offsets_s: Sequence[float] | None = None,
    concurrency: int | None = None,
    duration_s: float | None = None,
    request_timeout_s: float = 120.0,
    extra_body: Mapping[str, object] | None = None,
) -> tuple[float, list[RequestRecord]]:
    """Run one level; returns (level start on monotonic clock, records with times from that start).

    Open loop when `offsets_s` is given (one request per offset), closed loop at `concurrency`
    over all `prompts` otherwise. extra_body: decoding fields as the engine spells them.
    max_tokens per request (a trace): exactly that many where the engine takes ignore_eos.
    """
    url = base_url.rstrip("/") + "/v1/completions"

    def body(i: int) -> dict[str, object]:
        n = _tokens(max_tokens, i)
        extra = dict(extra_body or {})
        if not isinstance(max_tokens, int) and "ignore_eos" in extra:
            extra |= {"ignore_eos": True, "min_tokens": n}
        return {
            "model": model,
            "prompt": prompts[i % len(prompts)],
            "max_tokens": n,
            "stream": True,
            "stream_options": {"include_usage": True},
            **extra,
        }

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(request_timeout_s, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.monotonic()
        records: list[RequestRecord] = []
        if offsets_s is not None:
            tasks = []
            for i, off in enumerate(offsets_s):
                if duration_s is not None and off > duration_s:
                    break
                payload = body(i)  # built before the wait, not in the send's lag
                await _until(t0 + off)
                rec = RequestRecord(i, off, max_tokens=_tokens(max_tokens, i))
                records.append(rec)
                tasks.append(asyncio.create_task(_one(client, url, payload, rec, t0)))
            await asyncio.gather(*tasks)
        else:
            assert concurrency is not None and concurrency >= 1
            next_i = iter(range(len(prompts)))

            async def worker() -> None:
                for i in next_i:
                    now = time.monotonic() - t0
                    if duration_s is not None and now > duration_s:
                        return
                    rec = RequestRecord(i, now, max_tokens=_tokens(max_tokens, i))
                    records.append(rec)
                    await _one(client, url, body(i), rec, t0)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        records.sort(key=lambda r: r.index)
        return t0, records


def _tokens(max_tokens: int | Sequence[int], i: int) -> int:
    return max_tokens if isinstance(max_tokens, int) else max_tokens[i]
