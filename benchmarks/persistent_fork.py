"""Time per run in the docker-persistent container, with and without its fork server.

One `lem campaign --runner docker-persistent` of N experiments of the built-in tiny model (the
real PyTorch engine; 1 prompt, 2 output tokens, no warm-up, no gaps) with LEM_FORK_SERVER=0
(each run a plain `docker exec lem-worker`, paying torch + transformers imports) and with it on
(each run forked from the container's server, the engine preloaded), alternating per round so
that load from other work on the machine falls on both alike. Per experiment, from the manifest
and result.json:

  wall            manifest started_at -> finished_at
  worker start    phases_s.worker_start_s: from the runner's launch to the worker's first line
                  (docker exec, interpreter start or fork, the worker's own imports)
  engine import   phases_s.engine_import_s

A campaign's first experiment also waits for the container and (fork server on) for the
server's preload; it is reported apart (`first`), the rest are `later` runs.

    .venv/bin/python benchmarks/persistent_fork.py --rounds 2 --n 5

Needs a Docker engine and the pytorch image of this checkout's schema (tests/docker builds
`llenergymeasure-pytorch:cpu-test-<fingerprint>`; --image-tag for another). Writes
results/persistent_fork.json and this benchmark's section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from orchestration_overhead import CAMPAIGN, docker_unavailable

from llenergymeasure.orchestrator.manifest import ManifestStore
from llenergymeasure.results.schema import ExperimentResult, schema_fingerprint

MODES = {"exec": "0", "fork server": "1"}


def run_campaign(mode: str, n: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    campaign = work / "persistent.yaml"
    campaign.write_text(CAMPAIGN.format(n=n, seeds=list(range(1, n + 1))), encoding="utf-8")
    out = Path(tempfile.mkdtemp(prefix="persistent-", dir=work))
    cmd = [sys.executable, "-m", "llenergymeasure.cli", "campaign", str(campaign), "-q"]
    cmd += ["-o", str(out), "--runner", "docker-persistent"]
    env = env | {"LEM_FORK_SERVER": MODES[mode]}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"lem campaign ({mode}) failed:\n{proc.stdout}{proc.stderr}")
    (campaign_dir,) = [p.parent for p in out.glob("*/manifest.json")]
    runs = []
    entries = ManifestStore(campaign_dir).load().entries
    for entry in sorted(entries, key=lambda e: str(e.started_at)):
        assert entry.status == "done" and entry.result_path and entry.started_at, entry.error
        assert entry.finished_at is not None
        result = ExperimentResult.model_validate_json(
            (campaign_dir / entry.result_path).read_bytes()
        )
        assert result.phases_s is not None
        runs.append(
            {
                "wall_s": (entry.finished_at - entry.started_at).total_seconds(),
                "worker_start_s": result.phases_s.worker_start_s,
                "engine_import_s": result.phases_s.engine_import_s,
                "worker_start": result.worker_start,
            }
        )
    shutil.rmtree(out)
    return {"mode": mode, "n": n, "campaign_wall_s": wall_s, "runs": runs}


def summarise(campaigns: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for mode in MODES:
        mine = [c for c in campaigns if c["mode"] == mode]
        later = [r for c in mine for r in c["runs"][1:]]
        first = [c["runs"][0] for c in mine]
        table[mode] = {
            "later": {
                k: spread([r[k] for r in later])
                for k in ("wall_s", "worker_start_s", "engine_import_s")
            },
            "first_wall_s": spread([r["wall_s"] for r in first]),
            "campaign_wall_s": spread([c["campaign_wall_s"] for c in mine]),
            "worker_start": sorted({r["worker_start"] or "" for c in mine for r in c["runs"]}),
        }
    return table


def cell(stats: dict[str, float]) -> str:
    return f"{stats['median']:.2f} ({stats['q1']:.2f}–{stats['q3']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=5, help="experiments per campaign")
    parser.add_argument("--image-tag", default=f"cpu-test-{schema_fingerprint()}")
    args = parser.parse_args()
    skipped = docker_unavailable(args.image_tag)
    if skipped is not None:  # `make bench` goes on; the last recorded run stays in RESULTS.md
        print(f"persistent_fork skipped: {skipped}")
        return
    info, started = machine(), now()
    env = {**os.environ, "LEM_IMAGE_TAG": args.image_tag, "HF_HUB_OFFLINE": "1"}
    campaigns = []
    with tempfile.TemporaryDirectory(prefix="lem-persistent-") as tmp:
        for r in range(args.rounds):
            order = list(MODES) if r % 2 == 0 else list(MODES)[::-1]
            for mode in order:
                campaigns.append(run_campaign(mode, args.n, Path(tmp), env))
                c = campaigns[-1]
                walls = ", ".join(f"{x['wall_s']:.1f}" for x in c["runs"])
                print(f"round {r + 1} {mode:<12} runs {walls} s", flush=True)
    table = summarise(campaigns)
    raw = {
        "benchmark": "persistent_fork",
        "date": started,
        "command": command(),
        "machine": info,
        "image_tag": args.image_tag,
        "summary": table,
        "campaigns": campaigns,
    }
    write_json("persistent_fork.json", raw)
    rows = [
        "| worker start | wall per later run s | worker start s | engine import s "
        "| first run (container start) s | campaign s |",
        "|---|---|---|---|---|---|",
    ]
    for mode, s in table.items():
        later = s["later"]
        rows.append(
            f"| {mode} | {cell(later['wall_s'])} | {cell(later['worker_start_s'])} | "
            f"{cell(later['engine_import_s'])} | {cell(s['first_wall_s'])} | "
            f"{cell(s['campaign_wall_s'])} |"
        )
    saved = (
        table["exec"]["later"]["wall_s"]["median"]
        - table["fork server"]["later"]["wall_s"]["median"]
    )
    recorded = "; ".join(f"{m}: {', '.join(s['worker_start'])}" for m, s in table.items())
    update_results_md(
        "persistent_fork",
        f"""## docker-persistent: fork server in the container (time per run before/after)

**Machine:** {describe_machine(info)}; {started}. **Command:** `{raw["command"]}`
(raw: `results/persistent_fork.json`). Workload: `builtin:tiny-llama` with the real PyTorch
engine in the tests' CPU image, 1 prompt, 2 output tokens, no warm-up, no gaps;
{args.rounds} rounds x {args.n} experiments per mode, modes alternating. Median (IQR) over the
later runs of every campaign (the first also waits for the container and, fork server on, for
its preload).

{chr(10).join(rows)}

- Median time saved per later run: {saved:.2f} s.
- worker_start recorded in the results: {recorded}.
""",
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
