"""Grid scale: a campaign of 100 / 10,000 / 100,000 experiments, from file to resumable state.

Per size, each in a fresh process (so peak memory is that size's own):
  expand_s          read + validate + expand the campaign file (`load_campaign`)
  create_s          make the campaign directory: experiments.json + manifest (`create_campaign`)
  peak_rss_mb       the process's peak resident memory, and its growth over the imports alone
  update_ms         one entry's status change (a journal append, fsync'd): must not grow with N
  snapshot_s        one full manifest write (what every status change cost before the journal)
  resume_select_s   after an interruption (a journal of 1,000 changes, or N/2 for small N): load
                    the manifest, replay the journal, pick what is not done (`lem resume`'s
                    selection, in-process)
  resume_cli_s      `lem resume DIR --dry-run --json` end to end (process start included)

Target: expansion + creation of 100,000 under 5 s on the project's 2-core machine.

    .venv/bin/python benchmarks/grid_scale.py --sizes 100 10000 100000 --repeats 3

Writes results/grid_scale.json and this benchmark's section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _record import (
    command,
    describe_machine,
    machine,
    now,
    spread,
    update_results_md,
    write_json,
)

DIMENSIONS = {  # ten values each; a size of 10**k uses the first k
    "batch_size": list(range(1, 11)),
    "n_prompts": list(range(1, 11)),
    "max_output_tokens": list(range(1, 11)),
    "seed": list(range(1, 11)),
    "max_input_tokens": list(range(8, 18)),
}
INTERRUPTED_CHANGES = 1000


def campaign_yaml(size: int) -> str:
    k = len(str(size)) - 1
    if size != 10**k or not 1 <= k <= len(DIMENSIONS):
        sys.exit(f"sizes are powers of ten from 10 to 10**{len(DIMENSIONS)}, not {size}")
    lines = [
        f"name: scale{size}",
        "cycles: 1",
        "base:",
        "  model: builtin:tiny-llama",
        "grid:",
    ]
    lines += [f"  {key}: {values}" for key, values in list(DIMENSIONS.items())[:k]]
    return "\n".join(lines) + "\n"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def child(size: int, work: Path) -> dict[str, Any]:
    """One size, measured in this (fresh) process."""
    from llenergymeasure.config.grid import load_campaign
    from llenergymeasure.config.settings import UserSettings
    from llenergymeasure.orchestrator.layout import create_campaign
    from llenergymeasure.orchestrator.manifest import ManifestStore

    path = work / "campaign.yaml"
    path.write_text(campaign_yaml(size), encoding="utf-8")
    base_rss = rss_mb()

    t0 = time.perf_counter()
    campaign = load_campaign(path, max_experiments=size)  # as `lem campaign --yes`
    expand_s = time.perf_counter() - t0
    assert len(campaign.experiments) == size, len(campaign.experiments)

    t0 = time.perf_counter()
    campaign_dir = create_campaign(campaign, work / "out", settings=UserSettings())
    create_s = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    files = {p.name: p.stat().st_size for p in campaign_dir.iterdir()}
    del campaign

    # An interrupted campaign: a run of status changes in the journal, the last one running.
    store = ManifestStore(campaign_dir)
    manifest = store.load()
    changes = min(INTERRUPTED_CHANGES, size // 2)
    update_s = []
    for entry in manifest.entries[:changes]:
        entry.status, entry.attempts = "done", 1
        t0 = time.perf_counter()
        store.update(manifest, entry)
        update_s.append(time.perf_counter() - t0)
    running = manifest.entries[changes]
    running.status, running.attempts = "running", 1
    store.update(manifest, running)
    journal_bytes = store.journal_path.stat().st_size

    t0 = time.perf_counter()
    pending = ManifestStore(campaign_dir).load().pending()
    resume_select_s = time.perf_counter() - t0
    assert len(pending) == size - changes, len(pending)

    t0 = time.perf_counter()
    lem = [sys.executable, "-m", "llenergymeasure.cli"]
    proc = subprocess.run(
        [*lem, "resume", str(campaign_dir), "--dry-run", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    resume_cli_s = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"lem resume --dry-run failed:\n{proc.stderr}")
    assert len(json.loads(proc.stdout)["experiments"]) == size - changes

    snapshot = ManifestStore(campaign_dir)
    loaded = snapshot.load()
    t0 = time.perf_counter()
    snapshot.save(loaded)
    snapshot_s = time.perf_counter() - t0

    return {
        "size": size,
        "expand_s": expand_s,
        "create_s": create_s,
        "expand_create_s": expand_s + create_s,
        "base_rss_mb": base_rss,
        "peak_rss_mb": peak_rss,
        "rss_growth_mb": peak_rss - base_rss,
        "update_ms": statistics.median(update_s) * 1000,
        "snapshot_s": snapshot_s,
        "journal_changes": changes + 1,
        "journal_bytes": journal_bytes,
        "resume_select_s": resume_select_s,
        "resume_cli_s": resume_cli_s,
        "campaign_files": files,
    }


METRICS = [
    ("expand_s", "expand s", 2),
    ("create_s", "create s", 2),
    ("expand_create_s", "expand + create s", 2),
    ("rss_growth_mb", "peak RSS growth MB", 0),
    ("update_ms", "status change ms", 2),
    ("snapshot_s", "full snapshot write s", 3),
    ("resume_select_s", "resume selection s", 2),
    ("resume_cli_s", "`lem resume --dry-run` s", 2),
]


def cell(stats: dict[str, float], digits: int) -> str:
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}–{stats['max']:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per size")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.work)))
        return

    info, started = machine(), now()
    runs: list[dict[str, Any]] = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for repeat in range(args.repeats):
        shift = repeat % len(args.sizes)  # rotate: no size always runs first or last
        for size in args.sizes[shift:] + args.sizes[:shift]:
            with tempfile.TemporaryDirectory(prefix="lem-grid-") as tmp:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", str(size), "--work", tmp],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if proc.returncode != 0:
                sys.exit(f"size {size} failed:\n{proc.stdout}\n{proc.stderr}")
            runs.append(json.loads(proc.stdout))
            print(f"repeat {repeat + 1}, {size:>7}: {runs[-1]['expand_create_s']:.2f} s")

    summary = {
        size: {key: spread([r[key] for r in runs if r["size"] == size]) for key, _, _ in METRICS}
        for size in args.sizes
    }
    raw = {
        "benchmark": "grid_scale",
        "date": started,
        "command": command(),
        "machine": info,
        "summary": summary,
        "runs": runs,
    }
    write_json("grid_scale.json", raw)
    header = "| metric | " + " | ".join(f"{s:,}" for s in args.sizes) + " |"
    rows = [header, "|---" * (len(args.sizes) + 1) + "|"]
    for key, label, digits in METRICS:
        rows.append(
            f"| {label} | " + " | ".join(cell(summary[s][key], digits) for s in args.sizes) + " |"
        )
    biggest = max(args.sizes)
    total = summary[biggest]["expand_create_s"]
    files = next(r["campaign_files"] for r in runs if r["size"] == biggest)
    update_results_md(
        "grid_scale",
        f"""## Grid scale: expansion, campaign creation and resume selection

**Machine:** {describe_machine(info)}; {started}. **Command:** `{command()}`
(raw: `results/grid_scale.json`). Each size runs {args.repeats} times, each time in a fresh
process, sizes in rotating order; cells are median (min–max). Grid: the built-in model with
`log10(size)` dimensions of 10 values each (batch_size, n_prompts, max_output_tokens, seed,
max_input_tokens), one cycle. The interrupted campaign for resume: {INTERRUPTED_CHANGES:,}
status changes in the journal (size/2 for smaller sizes), the last one `running`.

{chr(10).join(rows)}

- **{biggest:,} experiments expanded and created in {total["median"]:.2f} s (median;
  {total["min"]:.2f}–{total["max"]:.2f}); target < 5 s.** A campaign directory holds
  {len(files)} files however large the grid ({
            ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(files.items()))
        } at {biggest:,}); each exp.json is written when its entry
  runs.
- A status change is one fsync'd journal line, the same cost at every size; the full snapshot
  write it replaces grows with the size (it is now done at campaign start and end, and when
  the journal outgrows the snapshot).
- Peak RSS growth is the whole process's growth over the imports: the expanded grid (each
  experiment's validated config), the manifest entries and the serialised files.
""",
    )


if __name__ == "__main__":
    main()
