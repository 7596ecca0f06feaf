"""The orchestrator's cost of a Slurm campaign at 10, 100 and 1,000 runs, on a real Slurm.

Each size is one `lem campaign --detach` (the library path it takes: plan, lay out, submit
as a job array, record every job id), then, once Slurm has run every task, one `lem resume`
that adopts every job and collates the results. The tasks' body is trivial: it writes a
valid result.json without running a worker (benchmarks/_slurm_body.py), so the numbers are
the orchestrator's and Slurm's side only, never inference. Per size, each step in a fresh
process:

  submission     wall time of --detach: campaign creation, exp.json per run, sbatch of the
                 array, the manifest with every job id
  sbatch         of which the sbatch call (submitit's map_array)
  tasks          until squeue lists none of the campaign's tasks (Slurm's throughput on this
                 node: not the orchestrator's cost)
  collation      wall time of the resume: each job adopted (its result pickle read), the
                 entry recorded, results.csv/parquet and summary.csv written; per run
  memory         peak RSS (ru_maxrss) of the submitting and of the resuming process

    nice -n 10 .venv/bin/python benchmarks/slurm_scale.py --sizes 10 100 1000

Needs a Slurm that answers (scripts/provision-slurm.sh). Writes results/slurm_scale.json
and this benchmark's section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _record import (
    REPO,
    command,
    describe_machine,
    machine,
    now,
    update_results_md,
    write_json,
)
from orchestration_overhead import CAMPAIGN as TINY_CAMPAIGN

CAMPAIGN = TINY_CAMPAIGN.replace(
    "name: overhead{n}\n",
    "name: scale{n}\nrunner: slurm\n"
    'slurm: {{exclusive: false, array_parallelism: 256, extra_sbatch: ["--nice=100"]}}\n',
)
"""orchestration_overhead's tiny campaign, run through Slurm; not exclusive, so both cores
run tasks, and niced, so other jobs (the Slurm tests) go first."""


COLUMNS = [
    "runs",
    "submission s",
    "of which sbatch s",
    "submission ms/run",
    "submit peak RSS MiB",
    "tasks ran s (Slurm)",
    "collation s",
    "collation ms/run",
    "resume peak RSS MiB",
]
HEADER = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def submit(root: Path, n: int) -> dict[str, Any]:
    """In this process: --detach's path with the trivial body; its timings and peak RSS."""
    import _slurm_body

    from llenergymeasure import conductor
    from llenergymeasure.conductor import detach
    from llenergymeasure.config.grid import load_campaign
    from llenergymeasure.orchestrator.runners import slurm

    path = root / "c.yaml"
    path.write_text(CAMPAIGN.format(n=n, seeds=list(range(n))), encoding="utf-8")
    sbatch_s = 0.0
    submit_array = slurm.SlurmRunner.submit_array

    def timed(self: Any, *args: Any, **kwargs: Any) -> list[str]:
        nonlocal sbatch_s
        t = time.perf_counter()
        ids = submit_array(self, *args, **kwargs)
        sbatch_s += time.perf_counter() - t
        return ids

    slurm.SlurmRunner.submit_array = timed  # type: ignore[method-assign]
    t0 = time.perf_counter()
    overrides = conductor.Overrides(face="api", output_dir=root / "results")
    plan = conductor.plan_campaign(
        lambda keys, limit: load_campaign(path, overrides=keys, max_experiments=limit), overrides
    )
    done = detach(plan, body=_slurm_body.write_result)
    return {
        "campaign_dir": str(done.campaign_dir),
        "submission_s": time.perf_counter() - t0,
        "sbatch_s": sbatch_s,
        "arrays": done.arrays,
        "jobs": len(done.job_ids),
        "array_id": done.job_ids[0].split("_")[0],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def collate(campaign_dir: Path) -> dict[str, Any]:
    """In this process: the resume that adopts and collates every job."""
    from llenergymeasure import conductor

    t0 = time.perf_counter()
    plan = conductor.plan_resume(campaign_dir, conductor.Overrides(face="api"))
    summary = conductor.execute(plan)
    return {
        "collation_s": time.perf_counter() - t0,
        "done": summary.manifest.counts().get("done", 0),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(step: str, arg: str) -> dict[str, Any]:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), str(REPO / "benchmarks"), str(REPO / "tests" / "unit")]
        )
    }
    out = subprocess.run(
        [sys.executable, __file__, "--step", step, arg],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(arg).parent if step == "collate" else arg,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{step} {arg} failed:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def wait_for_tasks(array_id: str) -> float:
    t0 = time.perf_counter()
    while subprocess.run(
        ["squeue", "-h", "-r", "-j", array_id, "-o", "%i"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip():
        time.sleep(2)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--step", choices=["submit", "collate"])
    parser.add_argument("arg", nargs="?")
    args = parser.parse_args()
    if args.step == "submit":
        print(json.dumps(submit(Path(args.arg), int(Path(args.arg).name.split("-")[-1]))))
        return
    if args.step == "collate":
        print(json.dumps(collate(Path(args.arg))))
        return
    info, started = machine(), now()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="lem-slurm-scale-") as tmp:
            root = Path(tmp) / f"n-{n}"
            root.mkdir()
            (root / ".lem-config.yaml").write_text("max_experiments: 100000\n", "utf-8")
            sub = child("submit", str(root))
            tasks_s = wait_for_tasks(sub["array_id"])
            col = child("collate", sub["campaign_dir"])
            assert col["done"] == n, (n, col)
            row = {"n": n, **sub, "tasks_s": tasks_s, **{f"resume_{k}": v for k, v in col.items()}}
            row.pop("campaign_dir")
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json("slurm_scale.json", {"machine": info, "started": started, "rows": rows})
    table = "\n".join(
        f"| {r['n']:,} | {r['submission_s']:.2f} | {r['sbatch_s']:.2f} | "
        f"{1000 * r['submission_s'] / r['n']:.1f} | {r['peak_rss_mib']:.0f} | "
        f"{r['tasks_s']:.0f} | {r['resume_collation_s']:.2f} | "
        f"{1000 * r['resume_collation_s'] / r['n']:.1f} | {r['resume_peak_rss_mib']:.0f} |"
        for r in rows
    )
    update_results_md(
        "slurm_scale",
        f"""## Slurm: submission, memory and collation at 10, 100 and 1,000 array tasks (issue 16)

**Machine:** {describe_machine(info)}; {started}. **Command:** `{command()}`
(raw: `results/slurm_scale.json`). A real one-node Slurm (scripts/provision-slurm.sh). Each
size is `lem campaign --detach`'s path (one job array, every job id recorded), then, once
Slurm has run every task, one resume that adopts each job and collates. **The tasks' body
is trivial: it writes a valid result.json without a worker** (benchmarks/_slurm_body.py),
so this is the orchestrator's side only. Each step in a fresh process; one run per size.

{HEADER}
{table}
""",
    )


if __name__ == "__main__":
    main()
