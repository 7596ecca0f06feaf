"""How long `lem --help` and `lem --version` take, and which heavy modules they import.

Each command runs `--runs` times in a fresh interpreter (`python -m llenergymeasure.cli`), each
source tree given by --src first on the path. With several --src, runs alternate between them
(A B A B ...), so that load from anything else on a shared machine falls on both alike.

    python benchmarks/cli_startup.py --src /tmp/before/src --src src --runs 10 \
        --out benchmarks/results/cli_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("pandas", "pyarrow", "matplotlib", "python_on_whales", "scipy", "torch")
COMMANDS = {"help": ["--help"], "version": ["--version"]}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(src: Path, args: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run: on a shared, loaded machine the CPU
    time is the one that says what the command itself costs."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    c0, t0 = cpu_s(), time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "llenergymeasure.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - t0, cpu_s() - c0


def heavy_imports(src: Path) -> list[str]:
    code = (
        "import sys, llenergymeasure.cli as c; "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, action="append")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sources: list[Path] = args.src or [Path("src")]
    times: dict[tuple[Path, str], list[tuple[float, float]]] = {}
    for _ in range(args.runs):
        for name, cli_args in COMMANDS.items():
            for src in sources:
                times.setdefault((src, name), []).append(time_once(src, cli_args))
    report = []
    for src in sources:
        entry: dict[str, object] = {"src": str(src), "heavy_imports": heavy_imports(src)}
        for name in COMMANDS:
            wall = [w for w, _ in times[(src, name)]]
            cpu = [c for _, c in times[(src, name)]]
            entry[name] = {
                "wall_median_s": round(statistics.median(wall), 3),
                "wall_min_s": round(min(wall), 3),
                "wall_max_s": round(max(wall), 3),
                "cpu_median_s": round(statistics.median(cpu), 3),
                "runs": len(wall),
            }
        report.append(entry)
    text = json.dumps({"load_average": os.getloadavg(), "sources": report}, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
