"""Crash-proof resume: SIGKILL the orchestrator again and again, resume each time.

Each trial is a small real campaign (2 experiments x 2 cycles, real tiny-model workers). Its
episodes are `lem campaign`, then `lem resume`s, each killed by SIGKILL at a seeded point:
either a named crash point armed through LEM_CRASHPOINT (llenergymeasure/faults.py: while the
manifest is half written, between a result landing and the manifest saying so, while the lock
or the tables are written, ...) or at a seeded random time. After every kill the harness checks
what must hold whatever the moment:

- the manifest loads (through ManifestStore, whatever its storage);
- every result.json that was ever complete is still there, byte for byte, same inode and
  mtime: nothing finished is lost or rewritten; and a `done` entry never goes back;
- no worker outlives its orchestrator, and the next run says it took over the stale lock;
- a kill between a result write and its manifest update left exactly that state, and the next
  run recovers the result instead of running it again.

When the kills of a trial are spent a plain resume finishes it; then every experiment and
cycle ends `done` exactly once (one `done` attempt in its history, the attempt result.json
was written by), each directory holds exp.json, worker.log and result.json and no temp file,
and results.csv has one row per experiment and cycle.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import (
    SEEDS_1_2,
    lem_cmd,
    lem_env,
    tiny_campaign,
    wait_until_no_process_mentions,
    write,
)
from pydantic import ValidationError

from llenergymeasure.orchestrator.manifest import Manifest, ManifestStore
from llenergymeasure.results.schema import ExperimentResult

pytestmark = pytest.mark.integration

CAMPAIGN = tiny_campaign("crash", cycles=2, tail=SEEDS_1_2)
ENTRIES = 4
KILLS_PER_TRIAL = 8
TARGET_KILLS = 22
MIN_KILLS = 20
MAX_TRIALS = 6
RANDOM_KILL_EVERY = 4
"""Every fourth resume is killed at a random moment instead of at a named point."""
EPISODE_TIMEOUT_S = 240.0

# (crash point, hits per episode: fixed + per entry still to run). Every point is in the
# orchestrator; n counts hits within one orchestrator process.
POINTS: list[tuple[str, int, int]] = [
    ("campaign.locked", 1, 0),  # lock taken, nothing else
    ("lock.truncated", 1, 0),  # the lock file emptied, not yet rewritten
    ("atomic.manifest.json.written", 1, 0),  # a manifest snapshot in its temp file
    ("atomic.manifest.json.replaced", 1, 0),  # renamed, directory not yet fsync'd
    ("manifest.journal.half", 0, 2),  # half a journal line on disk (a torn line)
    ("manifest.journal.appended", 0, 2),  # a journal line fsync'd, nothing after it
    ("campaign.before_start_save", 0, 1),  # running in memory only
    ("campaign.after_start_save", 0, 1),  # running on disk, no worker yet
    ("campaign.before_complete_save", 0, 1),  # result.json written, manifest not updated
    ("campaign.after_complete_save", 0, 1),
    ("campaign.before_collate", 1, 0),
    ("table.results.csv", 1, 0),  # results.csv in its temp file
    ("table.summary.parquet", 1, 0),
    ("campaign.after_summary", 1, 0),
]
END_POINTS = {"campaign.before_collate", "table.results.csv", "table.summary.parquet"}
END_POINTS |= {"campaign.after_summary"}
"""Fire once the episode has run everything: picked only with at most one entry left, so a
kill there does not finish the trial's work in one go."""
# the first episode is `lem campaign`: creating the directory writes the manifest, so points
# that would fire while it is created are left to the resumes
FIRST_EPISODE = {
    "campaign.locked",
    "campaign.before_start_save",
    "campaign.after_start_save",
    "campaign.before_complete_save",
    "campaign.after_complete_save",
}


class Schedule:
    """The kill points in a seeded order: every point is tried before any is tried twice
    (one that cannot fire in the state at hand, e.g. a worker's end when none is left to run,
    waits for a later episode)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.queue: list[tuple[str, int, int]] = []
        self.resumes = 0

    def pick(self, first: bool, remaining: int) -> tuple[str, float | None]:
        """(LEM_CRASHPOINT value, random kill delay or None) for the next episode."""
        if not first:
            self.resumes += 1
            if self.resumes % RANDOM_KILL_EVERY == 0:
                return "", self.rng.uniform(0.5, 7.0)
        for _ in range(2):
            for point in self.queue:
                name, base, per = point
                most = base + per * remaining
                late = name in END_POINTS and remaining > 1
                if most > 0 and not late and (not first or name in FIRST_EPISODE):
                    self.queue.remove(point)
                    return f"{name}:{self.rng.randint(1, min(most, 2))}", None
            self.queue += self.rng.sample(POINTS, len(POINTS))
        raise AssertionError(f"no kill point can fire (first={first}, remaining={remaining})")


@dataclass
class Trial:
    seed: int
    root: Path
    schedule: Schedule
    campaign_dir: Path | None = None
    finished: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)
    """key -> (inode, mtime_ns, bytes) of every result.json seen complete."""
    done_seen: set[str] = field(default_factory=set)
    kills: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    episodes: int = 0


def _load(campaign_dir: Path) -> Manifest:
    return ManifestStore(campaign_dir).load()


def _episode(trial: Trial, spec: str, delay_s: float | None) -> tuple[int, str]:
    """Run one orchestrator (campaign or resume) with a kill armed; (returncode, output)."""
    if trial.campaign_dir is None:
        args = lem_cmd("campaign", trial.root / "crash.yaml", "-o", trial.root / "out")
    else:
        args = lem_cmd("resume", trial.campaign_dir)
    env = lem_env() | ({"LEM_CRASHPOINT": spec} if spec else {})
    log_path = trial.root / f"episode-{trial.episodes}.out"
    trial.episodes += 1
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=trial.root, env=env, stdout=log, stderr=log)
        try:
            if delay_s is not None:
                try:
                    proc.wait(timeout=delay_s)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
            code = proc.wait(timeout=EPISODE_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if trial.campaign_dir is None:
        (trial.campaign_dir,) = [p for p in (trial.root / "out").iterdir() if p.is_dir()]
    return code, log_path.read_text(errors="replace")


def _complete_results(campaign_dir: Path, manifest: Manifest) -> dict[str, Path]:
    found = {}
    for entry in manifest.entries:
        path = campaign_dir / Path(entry.exp_path).parent / "result.json"
        try:
            ExperimentResult.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            continue
        found[entry.key] = path
    return found


def _check_after(trial: Trial, spec: str, output: str) -> Manifest:
    """The invariants that hold after any kill (or any normal end)."""
    campaign_dir = trial.campaign_dir
    assert campaign_dir is not None
    context = f"seed {trial.seed}, episode {trial.episodes - 1} ({spec or 'random kill'})"
    # PR_SET_PDEATHSIG: a worker dies with its orchestrator
    assert wait_until_no_process_mentions(campaign_dir, within_s=10.0) == [], context
    manifest = _load(campaign_dir)  # raises if the state does not load
    assert len(manifest.entries) == ENTRIES, context
    # nothing finished is lost or rewritten
    for key, (inode, mtime_ns, data) in trial.finished.items():
        entry = next(e for e in manifest.entries if e.key == key)
        path = campaign_dir / Path(entry.exp_path).parent / "result.json"
        stat = path.stat()
        assert (stat.st_ino, stat.st_mtime_ns) == (inode, mtime_ns), f"{context}: {key}"
        assert path.read_bytes() == data, f"{context}: {key} rewritten"
    for key, path in _complete_results(campaign_dir, manifest).items():
        stat = path.stat()
        trial.finished.setdefault(key, (stat.st_ino, stat.st_mtime_ns, path.read_bytes()))
    # a done entry stays done, with its result
    done = {e.key for e in manifest.entries if e.status == "done"}
    assert trial.done_seen <= done, f"{context}: {trial.done_seen - done} no longer done"
    trial.done_seen = done
    assert done <= set(trial.finished), context
    # one orchestrator, one experiment at a time
    assert sum(e.status == "running" for e in manifest.entries) <= 1, context
    if spec.startswith("campaign.before_complete_save"):
        # the crash window itself: a complete result whose entry does not say done yet
        (running,) = [e for e in manifest.entries if e.status == "running"]
        assert running.key in trial.finished, context
    return manifest


def _run_trial(trial: Trial) -> None:
    write(trial.root / "crash.yaml", CAMPAIGN)
    for _ in range(KILLS_PER_TRIAL):
        remaining, lock_left = ENTRIES, False
        if trial.campaign_dir is not None:
            remaining = len(_load(trial.campaign_dir).pending())
            lock_left = (trial.campaign_dir / "lem.lock").exists()
            if remaining == 0 and not lock_left:
                break  # finished cleanly; with a lock left, its end is still to be done
        spec, delay_s = trial.schedule.pick(trial.campaign_dir is None, remaining)
        code, output = _episode(trial, spec, delay_s)
        if lock_left and "took over" not in output:
            # killed before it reached the lock (a random kill during start-up) says nothing
            assert code == -signal.SIGKILL and delay_s is not None, output
        _check_after(trial, spec, output)
        if code == -signal.SIGKILL:
            trial.kills.append(spec or f"random {delay_s:.1f} s")
        else:
            assert code == 0, output  # the point was not reached: the campaign finished
            trial.misses.append(spec or f"random {delay_s:.1f} s")
    # a plain resume finishes what is left
    code, output = _episode(trial, "", None)
    assert code == 0, output
    manifest = _check_after(trial, "", output)
    _check_finished(trial, manifest)


def _check_finished(trial: Trial, manifest: Manifest) -> None:
    campaign_dir = trial.campaign_dir
    assert campaign_dir is not None
    for entry in manifest.entries:
        assert entry.status == "done", (entry.key, entry.status, entry.error)
        done = [a for a in entry.attempt_history if a.status == "done"]
        assert len(done) == 1, (entry.key, entry.attempt_history)  # done exactly once
        exp_dir = campaign_dir / Path(entry.exp_path).parent
        result = ExperimentResult.model_validate_json((exp_dir / "result.json").read_bytes())
        assert result.attempt == done[0].attempt == entry.attempts
        assert sorted(p.name for p in exp_dir.iterdir()) == [
            "exp.json",
            "result.json",
            "worker.log",
        ], exp_dir
    assert not list(campaign_dir.rglob(".*.tmp"))
    assert not (campaign_dir / "lem.lock").exists()
    frame = pd.read_csv(campaign_dir / "results.csv")
    assert len(frame) == ENTRIES
    assert sorted(zip(frame["experiment_id"], frame["cycle"], strict=True)) == sorted(
        (e.experiment_id, e.cycle) for e in manifest.entries
    )
    assert set(frame["status"]) == {"done"}


def test_sigkill_at_seeded_points_then_resume(tmp_path: Path) -> None:
    schedule = Schedule(seed=7)
    trials: list[Trial] = []
    for seed in range(MAX_TRIALS):
        if sum(len(t.kills) for t in trials) >= TARGET_KILLS:
            break
        trial = Trial(seed=seed, root=tmp_path / f"trial-{seed}", schedule=schedule)
        trial.root.mkdir()
        write(trial.root / ".lem-config.yaml", (tmp_path / ".lem-config.yaml").read_text())
        _run_trial(trial)
        trials.append(trial)
    kills = [k for t in trials for k in t.kills]
    assert len(kills) >= MIN_KILLS, kills
    # the windows that matter were hit, not only random moments
    names = {k.split(":")[0] for k in kills}
    assert {"campaign.before_complete_save", "atomic.manifest.json.written"} <= names, kills
    for t in trials:
        print(f"trial {t.seed}: {t.episodes} episodes, kills {t.kills}, not fired {t.misses}")
