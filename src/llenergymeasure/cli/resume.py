"""`lem resume`, `lem status` and `lem repair`: an existing campaign directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from llenergymeasure.cli import options as opts
from llenergymeasure.cli import running
from llenergymeasure.cli.options import app, err, out


@app.command()
def resume(
    campaign_dir: Annotated[
        Path | None,
        typer.Argument(help="Campaign directory; default: the newest unfinished one."),
    ] = None,
    results_dir: Annotated[
        Path | None,
        typer.Option(
            "--results-dir",
            help="Where to look for campaigns (default: results_dir of the user settings).",
        ),
    ] = None,
    timeout: opts.Timeout = None,
    dry_run: opts.DryRun = False,
    quiet: opts.Quiet = False,
    verbose: opts.Verbose = False,
    json_out: opts.JsonOut = False,
    gpus: opts.Gpus = None,
    runner: opts.RunnerOpt = None,
    retries: opts.Retries = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="Also run the experiments that failed (failed, oom) again."
        ),
    ] = False,
    force_unlock: Annotated[
        bool,
        typer.Option(
            opts.FORCE_FLAG,
            help="Take over the campaign's lock although it names another machine (only once "
            "you know no orchestrator runs it there).",
        ),
    ] = False,
    wait_for_gpus: opts.WaitForGpus = True,
) -> None:
    """Finish a campaign with the settings it was created with.

    Flags given here override those settings and are recorded. Runs what has not ended
    (pending, interrupted, and running when its orchestrator died); finished results are
    never redone. Failed experiments only run again with --retry-failed."""
    from llenergymeasure import conductor

    root, found = conductor.resumable(
        campaign_dir,
        results_dir,
        retry_failed,
        lambda problem: err.print(f"[yellow]notice[/]: {escape(problem)}", soft_wrap=True),
    )
    if found is None:
        if not quiet:
            err.print(f"Nothing to resume: no unfinished campaign under {root}/")
        if json_out:
            out.print_json(json.dumps({"campaign_dir": None, "experiments": []}))
        return
    directory, manifest, pending = found.campaign_dir, found.manifest, found.pending
    if dry_run:
        missing = " (result.json missing)"
        rows = [running.describe(e) + (missing if found.result_missing(e) else "") for e in pending]
        running.print_entries(f"Would run ({len(pending)})", rows, json_out)
        return
    if not pending and not found.unfinished:
        if json_out:
            running.print_entries("Would run (0)", [], json_out)
        failed = manifest.failed()
        if not failed:
            if not quiet:
                err.print(f"{directory}: every experiment is done; nothing to resume.")
            return
        err.print(
            f"{directory}: nothing left to run but {len(failed)} failed; to run them "
            f"again: {running.retry_command(directory)}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    overrides = conductor.Overrides(
        runner=runner,
        timeout_s=timeout,
        retries=retries,
        gpus=running.parse_gpus(gpus),
        retry_failed=retry_failed,
        force_unlock=force_unlock,
        wait_for_gpus=wait_for_gpus,
    )
    plan = conductor.plan_resume(directory, overrides)
    options = running.RunView(quiet, verbose, json_out)
    if not quiet:
        running.settings_notice(plan)
    if not quiet and not json_out:
        err.print(
            f"Resuming {directory}: {len(pending)} of {len(manifest.entries)} to run, "
            f"runner {plan.runner.name}"
        )
    running.execute(plan, options)


@app.command()
def status(campaign_dir: opts.CampaignDir, json_out: opts.JsonOut = False) -> None:
    """Where each run stands: the manifest, and a batch scheduler's state for runs it holds."""
    from collections import Counter

    from llenergymeasure import conductor

    rows = conductor.status(campaign_dir)
    if json_out:
        out.print_json(json.dumps([r.__dict__ for r in rows]))
        return
    out.print(", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in rows).items())))
    for r in rows:
        job = f" job {r.job_id}" if r.job_id else ""
        out.print(escape(f"{r.key}: {r.status}{job} {r.detail}".rstrip()), soft_wrap=True)


@app.command()
def repair(
    campaign_dir: opts.CampaignDir,
    force_unlock: Annotated[
        bool,
        typer.Option(opts.FORCE_FLAG, help="Take over a lock that names another machine."),
    ] = False,
) -> None:
    """Rebuild a damaged manifest.json from the result files and the journal; says what it
    could not recover. The damaged files are kept beside it."""
    from llenergymeasure import conductor

    report = conductor.repair(campaign_dir, force_unlock=force_unlock, notice=err.print)
    for line in report.lines():
        out.print(escape(line), soft_wrap=True, highlight=False)
