"""`lem campaign` and `lem run`: a new campaign, from a campaign file or one experiment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llenergymeasure.cli import options as opts
from llenergymeasure.cli import running
from llenergymeasure.cli.options import app, err, out


@app.command()
def campaign(
    file: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    output_dir: opts.OutputDir = None,
    timeout: opts.Timeout = None,
    dry_run: opts.DryRun = False,
    quiet: opts.Quiet = False,
    verbose: opts.Verbose = False,
    json_out: opts.JsonOut = False,
    gpus: opts.Gpus = None,
    cycles: opts.Cycles = None,
    order: opts.OrderOption = None,
    runner: opts.RunnerOpt = None,
    retries: opts.Retries = None,
    yes: opts.Yes = False,
    wait_for_gpus: opts.WaitForGpus = True,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="A batch runner: submit every run and return; `lem status` shows them, "
            "`lem resume` collates them.",
        ),
    ] = False,
) -> None:
    """Expand a campaign file's grid and run every experiment, cycle after cycle."""
    from llenergymeasure import conductor
    from llenergymeasure.config.grid import load_campaign

    overrides = conductor.Overrides(
        output_dir=output_dir,
        cycles=cycles,
        order=order,
        runner=runner,
        timeout_s=timeout,
        retries=retries,
        gpus=running.parse_gpus(gpus),
        allow_large=yes,
        wait_for_gpus=wait_for_gpus,
    )
    plan = conductor.plan_campaign(
        lambda keys, limit: load_campaign(file, overrides=keys, max_experiments=limit), overrides
    )
    if detach and not dry_run:
        done = conductor.detach(plan)
        if json_out:
            out.print_json(
                json.dumps({"campaign_dir": str(done.campaign_dir), "jobs": done.job_ids})
            )
        elif not quiet:
            err.print(
                f"Submitted {len(done.job_ids)} runs in {done.arrays} {done.scheduler} job "
                f"array(s) for {done.campaign_dir}; `lem status {done.campaign_dir}` shows them, "
                f"`lem resume {done.campaign_dir}` collates them.",
                soft_wrap=True,
            )
        return
    running.start(plan, running.RunView(quiet, verbose, json_out), dry_run)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Experiment YAML file (one configuration).")],
    output_dir: opts.OutputDir = None,
    timeout: opts.Timeout = None,
    dry_run: opts.DryRun = False,
    quiet: opts.Quiet = False,
    verbose: opts.Verbose = False,
    json_out: opts.JsonOut = False,
    gpus: opts.Gpus = None,
    runner: opts.RunnerOpt = None,
    retries: opts.Retries = None,
    wait_for_gpus: opts.WaitForGpus = True,
) -> None:
    """Run a single experiment once (a campaign of one, one cycle)."""
    from llenergymeasure import conductor
    from llenergymeasure.config.grid import load_experiment

    overrides = conductor.Overrides(
        output_dir=output_dir,
        runner=runner,
        timeout_s=timeout,
        retries=retries,
        gpus=running.parse_gpus(gpus),
        wait_for_gpus=wait_for_gpus,
    )
    plan = conductor.plan_campaign(lambda _keys, _limit: load_experiment(file), overrides)
    running.start(plan, running.RunView(quiet, verbose, json_out), dry_run)
