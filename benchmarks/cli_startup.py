"""How long `lem --help` and `lem --version` take, and which heavy modules they import.

Each command runs `--runs` times in a fresh interpreter (`python -m llenergymeasure.cli`), the
source tree given by --src first on the path, so two checkouts can be compared side by side.

    python benchmarks/cli_startup.py --src src --runs 10 --out results/cli_startup.json
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


def time_command(src: Path, args: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run: on a shared, loaded machine the CPU
    time is the one that says what the command itself costs."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    times, cpu = [], []
    for _ in range(runs):
        c0 = cpu_s()
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "llenergymeasure.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        times.append(time.perf_counter() - t0)
        cpu.append(cpu_s() - c0)
    return times, cpu


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
    parser.add_argument("--src", type=Path, default=Path("src"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict[str, object] = {"src": str(args.src), "heavy_imports": heavy_imports(args.src)}
    for name, cli_args in COMMANDS.items():
        times, cpu = time_command(args.src, cli_args, args.runs)
        report[name] = {
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "cpu_median_s": round(statistics.median(cpu), 3),
            "cpu_min_s": round(min(cpu), 3),
            "cpu_max_s": round(max(cpu), 3),
            "runs": args.runs,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
