"""What every benchmark records beside its numbers: the machine, the date and the exact command;
raw JSON under results/; and the section of RESULTS.md it owns, between two marker comments,
replaced on each run so the page always shows the last recorded run of each benchmark."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM and software: enough to tell two recorded runs' machines apart."""
    model = None
    try:
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def describe_machine(info: dict[str, Any]) -> str:
    load = ", ".join(f"{v:.2f}" for v in info["load_average_at_start"])
    return (
        f"{info['cpu_model']}, {info['cpu_cores']} cores, {info['ram_gib']} GiB RAM, "
        f"Python {info['python']}; shared with other work (load average at start {load})"
    )


def command() -> str:
    """The command line that ran this benchmark, relative to the repository root."""
    python = os.path.relpath(sys.executable, REPO)
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO)
    return shlex.join([python, script, *sys.argv[1:]])


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def update_results_md(key: str, markdown: str) -> None:
    """Replace this benchmark's section of RESULTS.md (or append it the first time)."""
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS_MD.write_text(text, encoding="utf-8")


def spread(values: list[float]) -> dict[str, float]:
    """Median and interquartile range (q1, q3), with min and max, of one measurement."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "q1": q1,
        "q3": q3,
        "min": ordered[0],
        "max": ordered[-1],
    }
