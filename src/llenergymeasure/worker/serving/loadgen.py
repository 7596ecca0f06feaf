"""Load generator: our own arrival schedule, streaming /v1/completions over httpx.

Every request records its scheduled and actual send time (the lag is the generator's, not the
server's), first-token time (first chunk that carries text), every chunk's time and its end.
Token counts are the server's own (`usage` with stream_options.include_usage): a streamed chunk
is a text delta, not a token. Bounded in count and in time: nothing is sent after `duration_s`
and every request is cut at `request_timeout_s` end to end. A chunk of the wrong shape, or any
other failure, costs only its request (recorded with the reason): nothing raises out of a level.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from llenergymeasure.measure.requests import RequestRecord


class Malformed(ValueError):
    """A chunk not of the shape OpenAI's completion-stream schema promises."""


def _chunk_text_and_usage(data: str) -> tuple[str | None, dict[str, Any] | None]:
    """One `data:` payload's text delta and usage, or Malformed saying what was wrong."""
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise Malformed(f"chunk is not an object: {data[:80]}")
    choices, usage = msg.get("choices") or [], msg.get("usage")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise Malformed(f"chunk choices is not a list of objects: {data[:80]}")
    text = choices[0].get("text") if choices else None
    if text is not None and not isinstance(text, str):
        raise Malformed(f"chunk text is not a string: {data[:80]}")
    if usage is not None and not (
        isinstance(usage, dict)
        and all(type(usage.get(k)) is int for k in ("prompt_tokens", "completion_tokens"))
    ):
        raise Malformed(f"chunk usage lacks integer token counts: {data[:80]}")
    return text, usage


async def _one(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, object],
    rec: RequestRecord,
    t0: float,
    timeout_s: float,
) -> None:
    """One request, cut at timeout_s end to end (a stream trickling keep-alives included);
    whatever goes wrong is this request's error, never the level's."""
    clock = time.monotonic
    rec.send_s = clock() - t0
    try:
        async with asyncio.timeout(timeout_s):
            await _stream(client, url, body, rec, t0)
    except TimeoutError:
        rec.error = f"request exceeded request_timeout_s={timeout_s:g} s"
    except Exception as e:  # httpx, JSON, Malformed, any surprise: this request's alone
        rec.error = f"{type(e).__name__}: {e}"
    if rec.error is None:
        rec.end_s = clock() - t0
        if rec.completion_tokens is None:
            rec.error = "server sent no usage (stream_options.include_usage unsupported?)"


async def _stream(
    client: httpx.AsyncClient, url: str, body: dict[str, object], rec: RequestRecord, t0: float
) -> None:
    async with client.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            said = (await resp.aread()).decode(errors="replace")[:300]
            rec.error = f"HTTP {resp.status_code}: {said}"
            return
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            now = time.monotonic() - t0
            text, usage = _chunk_text_and_usage(data)
            if text:
                rec.chunk_times_s.append(now)
                if rec.first_token_s is None:
                    rec.first_token_s = now
            if usage:
                rec.prompt_tokens = usage["prompt_tokens"]
                rec.completion_tokens = usage["completion_tokens"]


SPIN_S = 0.002
"""The last stretch before a send is spent yielding to the event loop rather than in one timed
sleep, whose wake-up the selector rounds to whole milliseconds (and the OS delays further)."""


async def _until(t: float) -> None:
    """Return at monotonic time t, other tasks running meanwhile."""
    while (left := t - time.monotonic()) > 0:
        await asyncio.sleep(left - SPIN_S if left > SPIN_S else 0)


WATCH_S = 0.2
"""How often a level checks that its server is still running."""
SERVER_GONE = "the server stopped during the request"


async def run_level(
    base_url: str,
    model: str,
    prompts: Sequence[str],
    max_tokens: int | Sequence[int],
    *,
    offsets_s: Sequence[float] | None = None,
    concurrency: int | None = None,
    duration_s: float | None = None,
    request_timeout_s: float = 300.0,
    extra_body: Mapping[str, object] | None = None,
    alive: Callable[[], bool] = lambda: True,
) -> tuple[float, list[RequestRecord]]:
    """Run one level; returns (level start on monotonic clock, records with times from that start).

    Open loop when `offsets_s` is given (one request per offset), closed loop at `concurrency`
    over all `prompts` otherwise. extra_body: decoding fields as the engine spells them. The
    level ends early when `alive()` turns false (the server exited): what was in flight is
    marked SERVER_GONE, nothing more is sent. Proxy variables are ignored: loopback traffic.
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
    records: list[RequestRecord] = []
    tasks: list[asyncio.Task[None]] = []

    async def send(client: httpx.AsyncClient, rec: RequestRecord) -> None:
        records.append(rec)
        await _one(client, url, body(rec.index), rec, t0, request_timeout_s)

    async def open_loop(client: httpx.AsyncClient) -> None:
        assert offsets_s is not None
        for i, off in enumerate(offsets_s):
            if duration_s is not None and off > duration_s:
                break
            await _until(t0 + off)
            rec = RequestRecord(i, off, max_tokens=_tokens(max_tokens, i))
            tasks.append(asyncio.create_task(send(client, rec)))
        await asyncio.gather(*tasks)

    async def closed_loop(client: httpx.AsyncClient) -> None:
        assert concurrency is not None and concurrency >= 1
        next_i = iter(range(len(prompts)))

        async def worker() -> None:
            for i in next_i:
                now = time.monotonic() - t0
                if duration_s is not None and now > duration_s:
                    return
                await send(client, RequestRecord(i, now, max_tokens=_tokens(max_tokens, i)))

        tasks.extend(asyncio.create_task(worker()) for _ in range(concurrency))
        await asyncio.gather(*tasks)

    async def watch() -> None:
        while alive():
            await asyncio.sleep(WATCH_S)

    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        t0 = time.monotonic()
        level = asyncio.create_task((open_loop if offsets_s is not None else closed_loop)(client))
        watcher = asyncio.create_task(watch())
        await asyncio.wait({level, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in (watcher, level, *tasks):
            task.cancel()
        await asyncio.gather(level, watcher, *tasks, return_exceptions=True)
    for rec in records:
        if rec.error is None and rec.end_s is None:
            rec.error = SERVER_GONE
    records.sort(key=lambda r: r.index)
    return t0, records


def _tokens(max_tokens: int | Sequence[int], i: int) -> int:
    return max_tokens if isinstance(max_tokens, int) else max_tokens[i]
