"""Orchestration overhead per experiment, per runner, and how it grows with campaign size.

For N = 1, 10, 50 experiments of the built-in tiny model (1 prompt, 2 output tokens, no warm-up,
no gaps), `lem campaign` runs one campaign per runner and N, as a user would. Per experiment:

  wall        manifest started_at -> finished_at: what the orchestrator spent on it
  phases      the worker's model_load_s + warmup_s + measured_duration_s
  container start
              docker-persistent only: the part of wall spent starting the backend's long-lived
              container (the manifest's container_start_s, on a campaign's first experiment)
  overhead    wall - container start - engine_import_s - phases: engine import (torch +
              transformers) counted as part of loading the model, which is what the worker
              reports it as
  overhead incl. import
              wall - container start - phases: the same with the engine import counted as
              overhead

and per campaign, amortised: (wall time of the whole `lem campaign` process - the sum of the
experiments' engine_import_s + phases) / N. That includes the CLI's start, campaign creation,
the manifest's compactions, collation, the summary and docker-persistent's container start: it
must fall with N, and the
per-experiment overhead must stay flat (manifest writes and collation O(1) per experiment).

Each round runs every (runner, N) once, runners in rotating order, so load from anything else on
the machine spreads over all of them alike; statistics are median and interquartile range over
every experiment of every round.

    .venv/bin/python benchmarks/orchestration_overhead.py --rounds 2

The docker runners need an engine (`docker info`) and the pytorch image of this checkout's
schema: the tests' CPU image (`llenergymeasure-pytorch:cpu-test-<fingerprint>`, built by
tests/docker) or --image-tag TAG for `make images BACKENDS=pytorch`. Without them they are
skipped, and the record says why. Writes results/orchestration_overhead.json, a PNG of the curve
and this benchmark's section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _record import (
    RESULTS_DIR,
    command,
    describe_machine,
    machine,
    now,
    spread,
    update_results_md,
    write_json,
)

from llenergymeasure.orchestrator.manifest import ManifestStore
from llenergymeasure.results.schema import ExperimentResult, schema_fingerprint

RUNNERS = ["local", "docker", "docker-persistent"]
TARGETS_S = {"local": 0.5, "docker": 1.5, "docker-persistent": 0.5}
CAMPAIGN = """\
name: overhead{n}
cycles: 1
gaps: {{between_experiments_s: 0, between_cycles_s: 0}}
base:
  model: builtin:tiny-llama
  n_prompts: 1
  max_output_tokens: 2
  warmup: {{runs: 0}}
grid:
  seed: {seeds}
"""
DOCKER_TEST_RUN = "pytest.*tests/docker"


def docker_unavailable(tag: str) -> str | None:
    """Why the docker runners cannot run here, or None when they can."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return "no Docker engine answers (`docker info` failed)"
    image = f"llenergymeasure-pytorch:{tag}"
    found = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        return f"image {image} is missing (run tests/docker once, or `make images` + --image-tag)"
    return None


def wait_for_docker_tests(limit_s: float = 1800) -> None:
    """Docker test runs on this machine collide with ours: wait until none is running."""
    deadline = time.monotonic() + limit_s
    while True:
        found = subprocess.run(
            ["pgrep", "-f", DOCKER_TEST_RUN], capture_output=True, text=True, check=False
        )
        if found.returncode != 0:
            return
        if time.monotonic() > deadline:
            sys.exit("a tests/docker run is still going; rerun later")
        print("waiting for a tests/docker run to finish ...", flush=True)
        time.sleep(30)


def run_campaign(runner: str, n: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One `lem campaign` of n experiments; the overheads of each, and the campaign's."""
    seeds = list(range(1, n + 1))
    campaign = work / f"overhead-{runner}-{n}.yaml"
    campaign.write_text(CAMPAIGN.format(n=n, seeds=seeds), encoding="utf-8")
    out = Path(tempfile.mkdtemp(prefix=f"{runner}-{n}-", dir=work))
    cmd = [sys.executable, "-m", "llenergymeasure.cli", "campaign", str(campaign), "-q"]
    cmd += ["-o", str(out), "--runner", runner]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    campaign_wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"lem campaign --runner {runner} (N={n}) failed:\n{proc.stdout}{proc.stderr}")
    (campaign_dir,) = [p.parent for p in out.glob("*/manifest.json")]
    experiments = []
    for entry in ManifestStore(campaign_dir).load().entries:
        assert entry.status == "done" and entry.result_path, entry.error
        assert entry.started_at is not None and entry.finished_at is not None
        result = ExperimentResult.model_validate_json(
            (campaign_dir / entry.result_path).read_bytes()
        )
        offline = result.offline
        assert offline is not None
        wall = (entry.finished_at - entry.started_at).total_seconds()
        phases = result.model_load_s + offline.warmup_s + result.measured_duration_s
        start = entry.container_start_s or 0.0
        experiments.append(
            {
                "wall_s": wall,
                "container_start_s": start,
                "engine_import_s": offline.engine_import_s,
                "phases_s": phases,
                "overhead_s": wall - start - offline.engine_import_s - phases,
                "overhead_incl_import_s": wall - start - phases,
            }
        )
    in_tool = sum(e["engine_import_s"] + e["phases_s"] for e in experiments)
    shutil.rmtree(out)
    return {
        "runner": runner,
        "n": n,
        "campaign_wall_s": campaign_wall_s,
        "amortised_overhead_s": (campaign_wall_s - in_tool) / n,
        "experiments": experiments,
    }


def summarise(campaigns: list[dict[str, Any]], runners: list[str], sizes: list[int]) -> Any:
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for runner in runners:
        table[runner] = {}
        for n in sizes:
            mine = [c for c in campaigns if c["runner"] == runner and c["n"] == n]
            exps = [e for c in mine for e in c["experiments"]]
            later = [e["overhead_s"] for c in mine for e in c["experiments"][1:]]
            starts = [sum(e.get("container_start_s", 0.0) for e in c["experiments"]) for c in mine]
            table[runner][n] = {
                key: spread([e[key] for e in exps])
                for key in ("overhead_s", "overhead_incl_import_s", "engine_import_s", "wall_s")
            } | {
                "amortised_overhead_s": spread([c["amortised_overhead_s"] for c in mine]),
                "overhead_after_first_s": spread(later) if later else None,
                "container_start_s": spread(starts) if any(starts) else None,
            }
    return table


def plot(table: Any, runners: list[str], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, runner in enumerate(runners):
        color = f"C{i}"
        for key, style, label in (
            ("overhead_s", "-o", "per experiment"),
            ("amortised_overhead_s", "--s", "amortised over the campaign"),
        ):
            med = [table[runner][n][key]["median"] for n in sizes]
            low = [m - table[runner][n][key]["q1"] for m, n in zip(med, sizes, strict=True)]
            high = [table[runner][n][key]["q3"] - m for m, n in zip(med, sizes, strict=True)]
            ax.errorbar(
                sizes, med, yerr=[low, high], fmt=style, color=color, capsize=3,
                label=f"{runner}: {label}",
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("experiments in the campaign (N)")
    ax.set_ylabel("overhead per experiment, s (median, IQR)")
    ax.set_title("Orchestration overhead outside engine import + load + warm-up + window")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cell(stats: dict[str, float]) -> str:
    return f"{stats['median']:.2f} ({stats['q1']:.2f}–{stats['q3']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--runners", nargs="+", default=RUNNERS, choices=RUNNERS)
    parser.add_argument("--image-tag", default=f"cpu-test-{schema_fingerprint()}")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RAW_JSON",
        help="measure nothing: redraw the PNG and the RESULTS.md section from a recorded run",
    )
    args = parser.parse_args()
    if args.render is not None:
        render(json.loads(args.render.read_text(encoding="utf-8")))
        return

    info, started = machine(), now()
    runners = list(args.runners)
    skipped = None
    if any(r != "local" for r in runners):
        skipped = docker_unavailable(args.image_tag)
        if skipped is not None:
            print(f"docker runners skipped: {skipped}", flush=True)
            runners = [r for r in runners if r == "local"]
        else:
            wait_for_docker_tests()
    env = {**os.environ, "LEM_IMAGE_TAG": args.image_tag, "HF_HUB_OFFLINE": "1"}
    campaigns: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lem-overhead-") as tmp:
        for r in range(args.rounds):
            shift = r % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                for n in args.sizes:
                    campaigns.append(run_campaign(runner, n, Path(tmp), env))
                    c = campaigns[-1]
                    print(
                        f"round {r + 1} {runner:<18} N={n:<3} "
                        f"campaign {c['campaign_wall_s']:6.1f} s, "
                        f"amortised overhead {c['amortised_overhead_s']:.2f} s",
                        flush=True,
                    )
    raw = {
        "benchmark": "orchestration_overhead",
        "date": started,
        "command": command(),
        "machine": info,
        "rounds": args.rounds,
        "sizes": args.sizes,
        "runners": runners,
        "image_tag": args.image_tag if "docker" in "".join(runners) else None,
        "docker_skipped": skipped,
        "summary": summarise(campaigns, runners, args.sizes),
        "campaigns": campaigns,
    }
    write_json("orchestration_overhead.json", raw)
    render(raw)


def render(raw: dict[str, Any]) -> None:
    """The PNG and the RESULTS.md section of one recorded run (summary recomputed from it)."""
    runners, sizes, skipped = raw["runners"], raw["sizes"], raw["docker_skipped"]
    info, started, rounds = raw["machine"], raw["date"], raw["rounds"]
    table = summarise(raw["campaigns"], runners, sizes)
    RESULTS_DIR.mkdir(exist_ok=True)
    plot(table, runners, sizes, RESULTS_DIR / "orchestration_overhead.png")
    rows = [
        "| runner | N | overhead s | overhead incl. engine import s | engine import s "
        "| container start per campaign s | amortised over the campaign s | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for runner in runners:
        for n in sizes:
            s = table[runner][n]
            rows.append(
                f"| {runner} | {n} | {cell(s['overhead_s'])} | "
                f"{cell(s['overhead_incl_import_s'])} | {cell(s['engine_import_s'])} | "
                f"{cell(s['container_start_s']) if s['container_start_s'] else '—'} | "
                f"{cell(s['amortised_overhead_s'])} | ≤ {TARGETS_S[runner]} |"
            )
    verdicts = []
    for runner in runners:
        worst = max(table[runner][n]["overhead_s"]["median"] for n in sizes)
        later = [table[runner][n]["overhead_after_first_s"] for n in sizes if n > 1]
        steady = max(x["median"] for x in later) if later else worst
        target = TARGETS_S[runner]
        verdicts.append(
            f"{runner}: worst median {worst:.2f} s, {'met' if worst <= target else 'NOT met'}"
            f"; without each campaign's first experiment {steady:.2f} s, "
            f"{'met' if steady <= target else 'NOT met'} (target ≤ {target} s)"
        )
    largest = max(sizes)

    def growth(smaller: int) -> str:
        ratios = {
            runner: table[runner][largest]["overhead_s"]["median"]
            / table[runner][smaller]["overhead_s"]["median"]
            for runner in runners
        }
        return "; ".join(f"{runner} {ratio:.2f}" for runner, ratio in ratios.items())

    growths = ", and ".join(f"over N={n}: {growth(n)}" for n in sorted(sizes)[:-1])
    skip_note = f"\n- Docker runners not run: {skipped}." if skipped else ""
    if "docker-persistent" in runners:
        skip_note += (
            "\n- docker-persistent: a campaign's first experiment also waits for its container to"
            "\n  start (`docker compose up`, once per backend and campaign). The runner records"
            "\n  that wait in the manifest (`container_start_s`); it is shown in its own column"
            "\n  and in the amortised column, not in the per-experiment overhead."
        )
    update_results_md(
        "orchestration_overhead",
        f"""## Orchestration overhead per experiment, by runner and campaign size

**Machine:** {describe_machine(info)}; {started}. **Command:** `{raw["command"]}`
(raw: `results/orchestration_overhead.json`, curve: `results/orchestration_overhead.png`).
Workload: `builtin:tiny-llama`, 1 prompt, 2 output tokens, no warm-up, no gaps; N experiments
(distinct seeds) per campaign; {rounds} rounds, each running every runner and N once,
runners in rotating order. Cells: median (interquartile range) over every experiment of every
round; the amortised column is over campaigns.

- *overhead*: the orchestrator's time for an experiment (manifest `started_at` →
  `finished_at`) minus the worker's engine import (`engine_import_s`: torch + transformers),
  model load, warm-up and measured window. The engine import is counted as part of loading
  the model, and reported as such in result.json; the next column counts it as overhead
  instead, so nobody is misled about what a fresh process costs.
- *amortised*: the whole `lem campaign` process's wall time minus every experiment's engine
  import + load + warm-up + window, divided by N: CLI start, campaign creation, manifest
  writes, collation, summary and docker-persistent's container start included.

{chr(10).join(rows)}

- Targets (per experiment, excluding the engine import): {"; ".join(verdicts)}.{skip_note}
- Growth with N: median per-experiment overhead at N={largest} {growths}
  (1.00 = flat). Each status change is one journal append (grid-scale table: the same cost at
  any size) and results are collated once, when the campaign stops; the amortised column
  holds the fixed costs of a campaign (CLI start, creation, collation), spread over N.
""",
    )


if __name__ == "__main__":
    main()
