"""Slurm runner: each experiment cycle is one Slurm job, submitted through submitit, whose
body runs the worker on its node through the local runner. Results land in the campaign
directory, which the node must see at the same path (a shared filesystem; on one node,
trivially). Slurm's own state (squeue) says how a job ended when it wrote no result: a lost
job (cancelled, node failure, preemption, time limit) ends with no exit code and its reason
in the log, so the campaign retries it within `retries`. Ctrl+C cancels every job still
queued or running (scancel): nothing is left queued."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llenergymeasure.config.campaign import NodeRunner, SlurmSettings
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.errors import RUN_LOCALLY, ConfigError, Option, PreflightError, printable
from llenergymeasure.orchestrator.runners import (
    NOT_STARTED,
    DoctorRow,
    Job,
    JobRef,
    Outcome,
    Runner,
    RunnerBase,
)

POLL_S = 0.5
PROVISION = "scripts/provision-slurm.sh"
ENDED = frozenset(
    "COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL PREEMPTED OUT_OF_MEMORY BOOT_FAIL "  # noqa: SIM905
    "DEADLINE REVOKED".split()
)
LIVE = frozenset(
    "PENDING CONFIGURING RUNNING COMPLETING REQUEUED REQUEUE_FED REQUEUE_HOLD RESIZING "  # noqa: SIM905
    "SUSPENDED STOPPED SIGNALING STAGE_OUT".split()
)
"""squeue states of a job that has not ended: it is waited for, never submitted again."""


@dataclass(frozen=True)
class NodeOutcome:
    returncode: int | None
    timed_out: bool
    node: str


def run_on_node(job: Job, node_runner: NodeRunner = "local") -> NodeOutcome:
    """The job body (runs on the node): the worker through the local runner, or the docker
    runner (node_runner docker: the backend's image on this node). Slurm gives the job its
    GPUs (CUDA_VISIBLE_DEVICES), so the host's indices are not applied here. One run per
    job: a fork server would pay the engine's imports for a single worker, and inside the
    job's process tree its forked workers failed to start (EOF from the server); spawn.

    SIGTERM means Slurm is ending the job (scancel, requeue, preemption, time limit; it
    signals the worker too). submitit's body ignores SIGTERM, so it would pickle the killed
    worker as the run's result, or finish the run while Slurm queues it again: a requeued
    job would look failed, or run twice. The body exits at once without a result instead
    (a container, which Slurm cannot signal, removed first); the orchestrator then asks
    Slurm how the job ended, or waits for its rerun."""
    runner = _node_runner(job, node_runner)
    _ON_END.append(runner)
    signal.signal(signal.SIGTERM, _slurm_ends_job)
    with runner:
        outcome = runner.run(dataclasses.replace(job, gpus=None))
    return NodeOutcome(outcome.returncode, outcome.timed_out, socket.gethostname())


_ON_END: list[Runner] = []
"""The node's runner, stopped at once when Slurm ends the job."""


def _node_runner(job: Job, node_runner: NodeRunner) -> Runner:
    if node_runner == "docker":
        from llenergymeasure.orchestrator.experiments import ExperimentSpecs
        from llenergymeasure.orchestrator.runners.docker import DockerEngine, read_spec
        from llenergymeasure.orchestrator.runners.docker_ephemeral import EphemeralDockerRunner

        campaign_dir = job.output_dir.parent.parent  # <campaign>/<experiment>/cycle-N
        engine = DockerEngine.connect()
        images = engine.require_images([read_spec(job).config.backend])
        input_dir = ExperimentSpecs(campaign_dir).base_dir
        return EphemeralDockerRunner(engine, images, campaign_dir, input_dir)
    from llenergymeasure.orchestrator.runners.local import LocalRunner

    return LocalRunner(fork_server=False)


def run_on_node_after(job: Job, gap_s: float, node_runner: NodeRunner = "local") -> NodeOutcome:
    """A job array's task: the gap before this run (the cool-down since the task before it
    ended on this node, in a one-node or per-node sequence), then the run."""
    signal.signal(signal.SIGTERM, _slurm_ends_job)
    time.sleep(gap_s)
    return run_on_node(job, node_runner)


def _slurm_ends_job(signum: int, frame: object) -> None:  # noqa: ARG001
    for runner in _ON_END:
        with contextlib.suppress(Exception):
            runner.__exit__(None, None, None)
    os._exit(128 + signum)


def _squeue_state(job_id: str) -> str | None:
    """Slurm's state of a job (squeue keeps ended jobs for MinJobAge), None when unknown."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    state = out.stdout.strip().splitlines()
    return state[0].strip() if state else None


def preflight(
    settings: SlurmSettings, results_dir: Path, sources: Mapping[str, str] | None = None
) -> str:
    """Bad settings fail here, before anything is submitted (exit code 2); else what was
    found, for `lem doctor`. sources: where each `slurm.<key>` came from, to name it."""
    sources = sources or {}
    for tool in ("sbatch", "squeue", "scancel", "sinfo"):
        if shutil.which(tool) is None:
            raise PreflightError(
                f"runner slurm: {tool} not found on PATH; install Slurm's client tools "
                "(Debian: slurm-client) or use {0}",
                options=(RUN_LOCALLY,),
            )
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30, check=False
    )
    if out.returncode != 0:
        raise PreflightError(
            f"runner slurm: sinfo failed: {out.stderr.strip()}; is slurmctld "
            "up? (scripts/provision-slurm.sh sets up a one-node Slurm)"
        )
    sbatch_flags(settings.extra_sbatch)
    if settings.node_runner == "docker" and not settings.exclusive:
        raise PreflightError(
            f"runner slurm: slurm.node_runner docker (from "
            f"{sources.get('slurm.node_runner', 'default')}) needs slurm.exclusive true: a "
            "task removes the campaign's containers it finds on its node when it starts and "
            "ends, which would end a neighbouring task's run"
        )
    partitions = [p.rstrip("*") for p in out.stdout.split()]
    if settings.partition is not None and settings.partition not in partitions:
        raise PreflightError(
            f"runner slurm: unknown partition {settings.partition!r} (from "
            f"{sources.get('slurm.partition', 'default')}); known: {', '.join(partitions)}"
        )
    found = f"partitions: {', '.join(partitions)}; results dir {results_dir}"
    nodes = set(_lines(["sinfo", "-h", "-N", "-o", "%N"]))
    if not nodes - {socket.gethostname(), socket.gethostname().split(".")[0]}:
        return f"{found}: one node, this machine (shared trivially)"
    fs = filesystem_type(results_dir)
    if fs not in SHARED_FS:
        raise PreflightError(
            f"runner slurm: the results directory {results_dir} is on {fs}, which the "
            f"other nodes ({', '.join(sorted(nodes))}) do not see; put it on a shared "
            f"filesystem ({', '.join(sorted(SHARED_FS))}) with {{0}}",
            options=(Option("output_dir"),),
        )
    return f"{found} on {fs}"


SHARED_FS = frozenset(
    "nfs nfs4 lustre gpfs beegfs cephfs ceph fuse.glusterfs smb2 cifs wekafs fuse.juicefs".split()  # noqa: SIM905
)


def max_array_size() -> int:
    """Slurm's MaxArraySize: the most tasks one array may have (its default, 1001, when
    scontrol does not say)."""
    for line in _lines(["scontrol", "show", "config"]):
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return max(1, int(value.strip()))
    return 1001


def filesystem_type(path: Path) -> str:
    """The filesystem type of path's nearest existing ancestor (stat -f)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    out = _lines(["stat", "-f", "-c", "%T", str(path)])
    return out[0] if out else "unknown"


def _lines(cmd: list[str]) -> list[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def sbatch_flags(words: Sequence[str]) -> dict[str, Any]:
    """Long sbatch flags (`--name=value`, `--name value`, `--switch`) as submitit's
    additional_parameters; anything else is refused."""
    flags: dict[str, Any] = {}
    key: str | None = None
    for word in words:
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            flags[name] = value if eq else True
            key = None if eq else name
        elif key is not None and flags[key] is True:
            flags[key] = word
            key = None
        else:
            raise PreflightError(
                f"runner slurm: slurm.extra_sbatch: {word!r} is not a long flag; "
                "write sbatch flags as --name=value"
            )
    return flags


class SlurmRunner(RunnerBase):
    name = "slurm"

    def __init__(self, settings: SlurmSettings, campaign_dir: Path) -> None:
        super().__init__()
        self.settings = settings
        self.folder = campaign_dir / "slurm" / "%j"
        self._active: dict[str, Any] = {}

    def close(self) -> None:
        self.on_interrupt(0.0)

    def on_interrupt(self, grace_s: float) -> None:  # noqa: ARG002 (Slurm KillWait is the grace)
        with self._lock:
            ids = list(self._active)
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60, check=False)

    def max_array_size(self) -> int:
        return max_array_size()

    def _executor(self, job: Job) -> Any:
        import submitit

        executor = submitit.SlurmExecutor(folder=self.folder)
        params: dict[str, Any] = {
            "time": self.settings.time_min or max(1, math.ceil(job.timeout_s / 60) + 1),
            "cpus_per_task": 1,
            "signal_delay_s": 0,
        }
        additional: dict[str, Any] = {}
        if self.settings.partition:
            params["partition"] = self.settings.partition
        if self.settings.account:
            additional["account"] = self.settings.account
        additional |= sbatch_flags(self.settings.extra_sbatch)
        if self.settings.qos:
            params["qos"] = self.settings.qos
        if self.settings.exclusive:
            params["exclusive"] = True
        gpus = len(job.gpus) if job.gpus else 0
        if gpus:
            params["gpus_per_node"] = gpus
        if additional:
            params["additional_parameters"] = additional
        executor.update_parameters(**params)
        return executor

    def run(self, job: Job) -> Outcome:
        t0 = time.monotonic()
        with self._lock:
            if self.stopping():
                return NOT_STARTED
            executor = self._executor(job)
            executor.update_parameters(job_name=job_name(job))
            # the callback stays here: only the files cross to the node
            submitted = executor.submit(run_on_node, self._for_node(job), self.settings.node_runner)
            job_id = str(submitted.job_id)
            self._active[job_id] = submitted
        if job.on_submitted is not None:
            job.on_submitted(job_id)
        return self._outcome(job, submitted, job_id, t0)

    def _for_node(self, job: Job) -> Job:
        """What crosses to the node: files and the environment (slurm.environment under the
        run's own variables); the manifest callback stays here."""
        return dataclasses.replace(
            job, on_submitted=None, env={**self.settings.environment, **job.env}
        )

    def adopt(self, job: Job, job_id: str) -> Outcome:
        """Wait for a job an earlier orchestrator submitted (it was killed, or detached) and
        say how it ended, as run() would have: a running job is waited for, not run twice."""
        import submitit

        t0 = time.monotonic()
        with self._lock:
            self.stopping()  # raises once closed
            submitted: Any = submitit.SlurmJob(folder=self.folder, job_id=job_id)
            self._active[job_id] = submitted
        return self._outcome(job, submitted, job_id, t0)

    def submit_array(
        self,
        jobs: list[Job],
        gaps_s: list[float],
        after: str | None,
        body: Callable[..., object] | None = None,
    ) -> list[str]:
        """Submit runs as one job array (submitit map_array) and return the task ids, in
        order, without waiting: at most slurm.array_parallelism run at once, each task
        sleeping its gap first; `after`: a job (array) that must end before any task starts
        (afterany: a cycle's barrier). The time limit is the longest run's. body: the task's
        function (default run_on_node_after; a benchmark of the orchestrator's side swaps in
        one that writes a result without a worker)."""
        longest = max(jobs, key=lambda j: j.timeout_s)
        executor = self._executor(longest)
        extra = dict(executor.parameters.get("additional_parameters") or {})
        if after is not None:
            extra["dependency"] = f"afterany:{after}"
        env = jobs[0].env
        executor.update_parameters(
            job_name=f"lem-{env.get('LEM_CAMPAIGN_ID', '')}",
            array_parallelism=self.settings.array_parallelism,
            additional_parameters=extra,
        )
        plain = [self._for_node(j) for j in jobs]
        kinds = [self.settings.node_runner] * len(jobs)
        submitted = executor.map_array(body or run_on_node_after, plain, gaps_s, kinds)
        return [str(s.job_id) for s in submitted]

    def _outcome(self, job: Job, submitted: Any, job_id: str, t0: float) -> Outcome:
        gpus = len(job.gpus) if job.gpus else 0
        try:
            state = self._wait(submitted, job_id)
        finally:
            with self._lock:
                self._active.pop(job_id, None)
        return job_outcome(job, submitted, job_id, state, time.monotonic() - t0, gpus)

    def _wait(self, submitted: Any, job_id: str) -> str | None:
        """Until the result file exists or Slurm says the job ended; a requeued job is
        pending again and is waited for."""
        missing = 0
        while True:
            if submitted.paths.result_pickle.exists():
                return "COMPLETED"
            state = _squeue_state(job_id)
            if state is None:
                missing += 1
                if missing > 10:
                    return None
            elif state in ENDED:
                # the result pickle is written before the job ends; look once more
                time.sleep(POLL_S)
                return state
            else:
                missing = 0
            time.sleep(POLL_S)


def job_name(job: Job) -> str:
    """The attempt's sbatch --job-name: campaign, experiment, cycle and attempt, so a resume
    finds the job in squeue even if the orchestrator died before recording its id."""
    env = job.env
    return (
        f"lem-{env.get('LEM_CAMPAIGN_ID', '')}-{env.get('LEM_EXPERIMENT_ID', '')}"
        f"-c{env.get('LEM_CYCLE', '')}-a{env.get('LEM_ATTEMPT', '')}"
    )


def find_job(name: str) -> str | None:
    """The id of the job named `name` still in Slurm's queue (squeue keeps an ended job for
    MinJobAge), None when there is none."""
    ids = _lines(["squeue", "-h", "-n", name, "-o", "%i"])
    return ids[-1] if ids else None


def job_outcome(
    job: Job, submitted: Any, job_id: str, state: str | None, wall_s: float, gpus: int
) -> Outcome:
    """How a job that is no longer queued ended: its result pickle (the worker's exit) when the
    body returned, else Slurm's last state (cancelled, node failure, preemption, time limit,
    or gone from the queue): a lost attempt, with the reason in the entry's log."""
    if submitted.paths.result_pickle.exists():
        try:
            node: NodeOutcome = submitted.result()
        except Exception as e:  # the body raised: recorded, retried like a crash
            _note(job, f"slurm job {job_id}: the job body failed: {e}")
            return Outcome(1, False, wall_s, job=JobRef(job_id, None, gpus))
        return Outcome(node.returncode, node.timed_out, wall_s, job=JobRef(job_id, node.node, gpus))
    _note(
        job,
        f"slurm job {job_id} ended {state or 'lost'} without a result "
        "(cancelled, node failure, preemption or time limit)",
    )
    return Outcome(None, state == "TIMEOUT", wall_s, job=JobRef(job_id, None, gpus))


def _note(job: Job, text: str) -> None:
    with job.log_path.open("a") as log:
        log.write(f"[lem slurm] {text}\n")


class SlurmQueue:
    """Slurm's word on a campaign's jobs (squeue), for a resume and `lem status`."""

    scheduler = "Slurm"
    cancel = "scancel"

    def find(self, job: Job) -> str | None:
        return find_job(job_name(job))

    def state(self, job_id: str) -> str | None:
        return _squeue_state(job_id)

    def live(self, state: str | None) -> bool:
        return state in LIVE

    def doctor(self, settings: UserSettings | None) -> DoctorRow:
        """Client tools, partitions, a results directory every node sees."""
        needed = settings is not None and settings.runner == "slurm"
        if shutil.which("sbatch") is None or shutil.which("squeue") is None:
            if not needed:
                return "ok", "sbatch not found (needed only for runner slurm)", ""
            fix = "install Slurm's client tools (Debian: slurm-client); one node: "
            return "fail", "runner slurm, but sbatch/squeue not found", fix + PROVISION
        root = Path(settings.results_dir if settings is not None else "results").resolve()
        try:
            slurm = settings.slurm if settings is not None else SlurmSettings()
            found = preflight(slurm, root, settings.sources if settings is not None else None)
        except PreflightError as e:
            fix = "LEM_SLURM_PARTITION: one sinfo lists; results on a shared filesystem (-o DIR)"
            return ("fail" if needed else "warn"), printable(str(e), 600), fix
        return "ok", f"sbatch, squeue found; {found}", ""

    def refuse_strays(self, campaign_id: str, known: set[str], unknown: list[str]) -> None:
        """A detached submission killed between sbatch and recording the task ids leaves runs
        `running` with no id while their array's tasks (named lem-<campaign id>) may still run:
        running them again now could run them twice, so the resume waits for the user."""
        rows = _lines(["squeue", "-h", "-r", "-n", f"lem-{campaign_id}", "-o", "%i %T"])
        stray = sorted({r.split()[0] for r in rows if r.split()[-1] in LIVE} - known)
        if stray:
            raise ConfigError(
                f"Slurm runs jobs of this campaign that its manifest does not name "
                f"({', '.join(stray[:5])}{', ...' if len(stray) > 5 else ''}) while "
                f"{len(unknown)} run(s) have no job id (e.g. {unknown[0]}): their submission "
                "was cut short. Wait until they end (squeue), or scancel them, then resume: a "
                "complete result is kept, the rest runs again"
            )
