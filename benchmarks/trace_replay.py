"""How late a trace's sends are (issue 31.5): the shipped synthetic trace
(campaigns/traces/synthetic.jsonl, 24 requests over 4.5 s) replayed through the load generator
against a real `transformers serve` with the built-in model, on the same CPU cores, at each
`--speeds` (trace_speed) `--repeats` times. Lateness: actual minus scheduled send, per request.

    python benchmarks/trace_replay.py --repeats 3 --out benchmarks/results/trace_replay.json
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np
from _record import command, describe_machine, machine, now, update_results_md, write_json

from llenergymeasure.backends.common import load_tokenizer
from llenergymeasure.config.trace import read_trace
from llenergymeasure.datasets import builtin_prompts, sized_prompt
from llenergymeasure.models import resolve_model
from llenergymeasure.worker.serving.loadgen import run_level
from llenergymeasure.worker.serving.server import free_port, launched

TRACE = Path(__file__).resolve().parents[1] / "campaigns" / "traces" / "synthetic.jsonl"
ALLOWED_MS = 20.0
"""The issue's figure: every send within 20 ms of its offset."""
HEADER = (
    "| trace_speed | run | requests | failed | late p50 (ms) | late p99 (ms) | late max (ms) "
    f"| within {ALLOWED_MS:g} ms |"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--speeds", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--out", type=Path, default=Path("trace_replay.json"))
    args = parser.parse_args()
    info = machine()
    model = str(resolve_model("builtin:tiny-llama"))
    tokenizer = load_tokenizer(model)
    trace = read_trace(TRACE)
    source = builtin_prompts()
    prompts = [
        sized_prompt(tokenizer, source[i % len(source)], r.input_tokens or 1)
        for i, r in enumerate(trace)
    ]
    lengths = [r.output_tokens for r in trace]
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "transformers"), "serve", "--continuous-batching"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    cmd += ["--cb-num-blocks", "256", model]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, launched(cmd, port, 300, Path(tmp) / "s.log") as srv:
        asyncio.run(run_level(srv.base_url, model, prompts[:4], 4, offsets_s=[0.0] * 4))  # warm
        for speed in args.speeds:
            for repeat in range(args.repeats):
                offsets = [r.t_s / speed for r in trace]
                _, recs = asyncio.run(
                    run_level(srv.base_url, model, prompts, lengths, offsets_s=offsets)
                )
                late_ms = np.array([r.lag_s for r in recs]) * 1e3
                row = {
                    "speed": speed,
                    "repeat": repeat + 1,
                    "requests": len(recs),
                    "failed": sum(1 for r in recs if not r.ok),
                    "late_p50_ms": float(np.percentile(late_ms, 50)),
                    "late_p99_ms": float(np.percentile(late_ms, 99)),
                    "late_max_ms": float(late_ms.max()),
                    "within_allowed": int((late_ms <= ALLOWED_MS).sum()),
                }
                rows.append(row)
                print(row, flush=True)
    data = {"machine": info, "command": command(), "at": now(), "rows": rows}
    write_json(args.out.name, data)
    table = "\n".join(
        f"| {r['speed']:g} | {r['repeat']} | {r['requests']} | {r['failed']} | "
        f"{r['late_p50_ms']:.2f} | {r['late_p99_ms']:.2f} | {r['late_max_ms']:.2f} | "
        f"{r['within_allowed']}/{r['requests']} |"
        for r in rows
    )
    worst = max(r["late_max_ms"] for r in rows)
    update_results_md(
        "trace_replay",
        f"""## Trace replay: how late the sends are against a real server (issue 31.5)

{describe_machine(info)}; {data["at"]}; `{data["command"]}`. The shipped synthetic trace
(24 requests, 4.5 s, 16-128 prompt and 4-16 output tokens) through `run_level` against a real
`transformers serve --continuous-batching` with the built-in model, on the same cores; late =
actual minus scheduled send. Worst send over every run: **{worst:.2f} ms** late (the issue
asks for {ALLOWED_MS:g} ms at the CPU's pace; a figure here, never a timed assertion in the
tests). Each trace level records its own per-request lateness in `requests-trace.parquet`.

{HEADER}
|---|---|---|---|---|---|---|---|
{table}
""",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
