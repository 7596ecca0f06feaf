"""Per-experiment overhead of each runner on the built-in tiny model.

Overhead = what the orchestrator measured for an experiment (manifest started_at -> finished_at)
minus what the worker measured for itself (result started_at -> finished_at): process or
container start, interpreter and torch import, reading the spec, writing the result, and for the
docker runners the docker CLI and the container lifecycle.

    .venv/bin/python benchmarks/runner_overhead.py --rounds 4 --cycles 5 --image-tag latest --json

Each round runs one campaign per runner, in a rotated order, so that load from anything else on
the machine spreads over all runners alike; the persistent runner's first experiment of each
campaign includes starting its container.

The docker runners need the pytorch image (`make images BACKENDS=pytorch`, or the tests' CPU
image: --image-tag cpu-test). Results go to stdout as a table and, with --json, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from llenergymeasure.orchestrator.manifest import ManifestStore
from llenergymeasure.results.schema import ExperimentResult

CAMPAIGN = """\
name: overhead
cycles: {cycles}
base:
  model: builtin:tiny-llama
  n_prompts: 1
  max_output_tokens: 2
  warmup: {runs: 0}
"""


def overheads(runner: str, cycles: int, work: Path, env: dict[str, str]) -> list[float]:
    campaign = work / f"{runner}.yaml"
    campaign.write_text(CAMPAIGN.format(cycles=cycles), encoding="utf-8")
    out = Path(tempfile.mkdtemp(prefix=f"{runner}-", dir=work))
    cmd = [sys.executable, "-m", "llenergymeasure.cli", "campaign", str(campaign), "-q"]
    cmd += ["-o", str(out), "--runner", runner]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"lem campaign --runner {runner} failed:\n{proc.stdout}{proc.stderr}")
    (campaign_dir,) = [p.parent for p in out.glob("*/manifest.json")]
    values = []
    for entry in ManifestStore(campaign_dir).load().entries:
        assert entry.status == "done" and entry.result_path, entry.error
        assert entry.started_at is not None and entry.finished_at is not None
        result = ExperimentResult.model_validate_json(
            (campaign_dir / entry.result_path).read_bytes()
        )
        outside = (entry.finished_at - entry.started_at).total_seconds()
        inside = (result.finished_at - result.started_at).total_seconds()
        values.append(outside - inside)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="campaigns per runner")
    parser.add_argument("--cycles", type=int, default=5, help="experiments per campaign")
    parser.add_argument("--image-tag", default="latest", help="LEM_IMAGE_TAG of the images")
    parser.add_argument("--runners", nargs="+", default=["local", "docker", "docker-persistent"])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    env = {**os.environ, "LEM_IMAGE_TAG": args.image_tag, "HF_HUB_OFFLINE": "1"}
    values: dict[str, list[float]] = {runner: [] for runner in args.runners}
    with tempfile.TemporaryDirectory(prefix="lem-overhead-") as tmp:
        for n in range(args.rounds):
            order = args.runners[n % len(args.runners) :] + args.runners[: n % len(args.runners)]
            for runner in order:
                values[runner] += overheads(runner, args.cycles, Path(tmp), env)
    report = {
        runner: {
            "n": len(found),
            "median_s": statistics.median(found),
            "min_s": min(found),
            "max_s": max(found),
        }
        for runner, found in values.items()
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'runner':<18} {'n':>3} {'median s':>9} {'min s':>7} {'max s':>7}")
    for runner, row in report.items():
        print(
            f"{runner:<18} {row['n']:>3.0f} {row['median_s']:>9.2f} "
            f"{row['min_s']:>7.2f} {row['max_s']:>7.2f}"
        )


if __name__ == "__main__":
    main()
