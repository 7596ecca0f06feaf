"""A CSV of (timestamp, input length, output length) -> a `server.trace` JSONL for lem.

Public LLM serving traces take this shape: Azure's LLM inference traces (TIMESTAMP,
ContextTokens, GeneratedTokens), BurstGPT (Timestamp, Request tokens, Response tokens).
Timestamps may be seconds or date-times; offsets start at the earliest request, rows are
sorted by time, and rows with a length below 1 are dropped (counted on stderr).

    python tools/trace_from_csv.py IN.csv OUT.jsonl [--columns TIME,INPUT,OUTPUT] [--limit N]

--columns names the three columns (default: the first three); --limit keeps the first N
requests in time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd


def convert(source: Path, target: Path, columns: list[str] | None, limit: int | None) -> int:
    """Write the trace; returns the number of requests written."""
    table = pd.read_csv(source)
    names = columns or list(table.columns[:3])
    if len(names) != 3 or any(n not in table.columns for n in names):
        raise SystemExit(f"{source}: need 3 columns (time, input, output); have {list(table)}")
    time, inputs, outputs = (table[n] for n in names)
    if pd.api.types.is_numeric_dtype(time):
        seconds = time.astype(float)
    else:
        stamps = pd.to_datetime(time, format="mixed")
        seconds = (stamps - stamps.min()).dt.total_seconds()
    frame = pd.DataFrame({"t_s": seconds, "input_tokens": inputs, "output_tokens": outputs})
    kept = frame[(frame["input_tokens"] >= 1) & (frame["output_tokens"] >= 1)].dropna()
    if len(kept) < len(frame):
        print(f"dropped {len(frame) - len(kept)} rows with a length below 1", file=sys.stderr)
    kept = kept.sort_values("t_s", kind="stable").head(limit)
    start = kept["t_s"].min() if len(kept) else 0.0
    with target.open("w", encoding="utf-8") as out:
        for t, n_in, n_out in kept.itertuples(index=False):
            row = {"t_s": round(t - start, 6), "input_tokens": int(n_in)}
            out.write(json.dumps(row | {"output_tokens": int(n_out)}) + "\n")
    return len(kept)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--columns", type=lambda s: s.split(","), default=None)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    count = convert(args.source, args.target, args.columns, args.limit)
    print(f"{args.target}: {count} requests")


if __name__ == "__main__":
    main()
