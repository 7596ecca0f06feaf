"""Campaign directory layout, the run loop with in-test runners, recovery, and collation."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pytest

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config import load_campaign
from llenergymeasure.config.grid import Campaign
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import ERROR_FILE, EXP_FILE, RESULT_FILE
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator import layout as layout_module
from llenergymeasure.orchestrator.campaign import Events, run_campaign_dir
from llenergymeasure.orchestrator.experiments import EXPERIMENTS_FILE, ExperimentSpecs
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import ManifestEntry, ManifestStore
from llenergymeasure.orchestrator.names import MANIFEST_FILE
from llenergymeasure.orchestrator.runners import Job, Outcome
from llenergymeasure.results.collate import RESULTS_CSV, RESULTS_PARQUET, collate
from llenergymeasure.results.schema import ErrorRecord, ExperimentResult, schema_fingerprint

WriteYaml = Callable[..., Path]
ResultFor = Callable[..., ExperimentResult]

CAMPAIGN_YAML = """\
name: layout
cycles: 2
timeout_s: 42
gaps: {between_experiments_s: 0, between_cycles_s: 0}
base:
  n_prompts: 4
  max_output_tokens: 4
grid:
  batch_size: [1, 2]
  precision: [fp32, bf16]
"""


@pytest.fixture
def loaded(write_yaml: WriteYaml) -> Campaign:
    return load_campaign(write_yaml(CAMPAIGN_YAML))


def read_spec(path: Path) -> ExperimentSpec:
    return ExperimentSpec.model_validate_json(path.read_bytes())


def spec_of(directory: Path, entry: ManifestEntry) -> ExperimentSpec:
    """The exp.json an entry's first attempt will get (written only when it runs)."""
    manifest = ManifestStore(directory).load()
    return ExperimentSpecs(directory).spec(manifest, entry, attempt=1)


# ------------------------------------------------------------------------------------ layout


def test_create_campaign_layout(tmp_path: Path, loaded: Campaign) -> None:
    out = tmp_path / "out"
    directory = create_campaign(loaded, output_root=out)

    assert directory.parent == out.resolve()
    assert directory.is_absolute()
    name, _, stamp = directory.name.partition("_")
    assert name == "layout"
    assert datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").year >= 2025
    assert (directory / "campaign.yaml").read_bytes() == loaded.source.read_bytes()

    # three files, however many experiments: each exp.json is written when its entry runs
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["campaign.yaml", EXPERIMENTS_FILE, MANIFEST_FILE]
    )


def test_exp_json_is_a_complete_spec(tmp_path: Path, loaded: Campaign) -> None:
    directory = create_campaign(loaded, output_root=tmp_path)
    by_id = {e.experiment_id: e for e in loaded.experiments}
    manifest = ManifestStore(directory).load()
    specs = ExperimentSpecs(directory)
    assert len(manifest.entries) == 8
    for entry in manifest.entries:
        path = specs.write_spec(manifest, entry, attempt=1)
        assert path == directory / entry.exp_path
        spec = read_spec(path)
        exp = by_id[spec.experiment_id]
        assert spec.config == exp.config
        assert spec.config.experiment_id() == spec.experiment_id
        assert spec.schema_fingerprint == schema_fingerprint()
        assert spec.campaign_id == directory.name
        assert spec.campaign_name == "layout"
        assert spec.cycle == int(path.parent.name.removeprefix("cycle-"))
        assert spec.total_cycles == 2
        assert spec.attempt == 1
        assert Path(spec.output_dir) == path.parent
        assert Path(spec.base_dir) == loaded.base_dir
        assert Path(spec.output_dir).is_absolute()
        assert Path(spec.cache_dir) == directory / ".cache"  # one cache for the campaign


def test_manifest_keeps_the_campaign_files_runner_settings(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    """`lem resume` reads them from the manifest: the campaign file may have changed since."""
    text = CAMPAIGN_YAML + "runner: docker-persistent\ncold_start: true\n"
    directory = create_campaign(load_campaign(write_yaml(text)), output_root=tmp_path)
    m = ManifestStore(directory).load()
    assert (m.runner_choice, m.cold_start) == ("docker-persistent", True)
    assert all(e.runner == "docker-persistent" for e in m.entries)


def test_manifest_entries_pending_and_cycle_major(tmp_path: Path, loaded: Campaign) -> None:
    directory = create_campaign(loaded, output_root=tmp_path)
    m = ManifestStore(directory).load()
    ids = [e.experiment_id for e in loaded.experiments]
    assert [(e.experiment_id, e.cycle) for e in m.entries] == [(i, c) for c in (1, 2) for i in ids]
    assert all(e.status == "pending" for e in m.entries)
    assert all(e.attempts == 0 for e in m.entries)
    # no runner asked for: auto decides when the campaign runs
    assert all(e.runner == "auto" and e.backend == "pytorch" for e in m.entries)
    assert all(e.container_name is None and e.image_digest is None for e in m.entries)
    assert (m.runner_choice, m.cold_start) == (None, False)
    assert [e.label for e in m.entries[:4]] == [e.label for e in loaded.experiments]
    for e in m.entries:
        assert e.exp_path == f"{e.experiment_id}/cycle-{e.cycle}/{EXP_FILE}"
        assert not (directory / e.exp_path).exists()
    assert m.campaign_id == directory.name
    assert m.campaign_name == "layout"
    assert m.total_cycles == 2
    assert m.timeout_s == 42
    assert m.schema_fingerprint == schema_fingerprint()
    assert m.pending() == m.entries


def test_config_hash_is_stable_across_creations(tmp_path: Path, loaded: Campaign) -> None:
    a = ManifestStore(create_campaign(loaded, output_root=tmp_path / "a")).load()
    b = ManifestStore(create_campaign(loaded, output_root=tmp_path / "b")).load()
    assert a.config_hash == b.config_hash
    assert len(a.config_hash) == 64


@pytest.mark.timeout(60)  # a broken suffix loop would spin forever
def test_same_second_creations_get_distinct_directories(
    tmp_path: Path, loaded: Campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> FrozenClock:
            return cls(2025, 6, 7, 8, 9, 10, tzinfo=timezone.utc)

    monkeypatch.setattr(layout_module, "datetime", FrozenClock)
    dirs = [create_campaign(loaded, output_root=tmp_path) for _ in range(3)]
    assert [d.name for d in dirs] == [
        "layout_20250607T080910Z",
        "layout_20250607T080910Z-2",
        "layout_20250607T080910Z-3",
    ]
    for d in dirs:
        m = ManifestStore(d).load()
        assert m.campaign_id == d.name
        assert spec_of(d, m.entries[0]).campaign_id == d.name


def test_back_to_back_creations_are_distinct(tmp_path: Path, loaded: Campaign) -> None:
    first = create_campaign(loaded, output_root=tmp_path)
    second = create_campaign(loaded, output_root=tmp_path)
    assert first != second
    assert (first / MANIFEST_FILE).is_file()
    assert (second / MANIFEST_FILE).is_file()


def test_too_many_builtin_prompts_fails_before_writing(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    loaded = load_campaign(write_yaml("name: big\ngrid:\n  n_prompts: [8, 65]\n"))
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        create_campaign(loaded, output_root=out)
    message = str(info.value)
    assert "n_prompts is 65" in message
    assert "built-in set (64 prompts)" in message
    assert not out.exists()


def test_jsonl_prompt_file_checked_before_writing(tmp_path: Path, write_yaml: WriteYaml) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n', encoding="utf-8")
    path = write_yaml("name: j\nbase:\n  n_prompts: 3\n  prompts: {source: jsonl, path: p.jsonl}\n")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"p\.jsonl \(2 prompts\)"):
        create_campaign(load_campaign(path), output_root=out)
    assert not out.exists()


def test_output_root_defaults_to_campaign_output_dir(
    tmp_path: Path, write_yaml: WriteYaml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_campaign(write_yaml("name: od\noutput_dir: my-results\n"))
    directory = create_campaign(loaded)
    assert directory.parent == (tmp_path / "my-results").resolve()


# ------------------------------------------------------------------------- runners in tests


def worker_failed(job: Job, message: str, category: str = "backend") -> Outcome:
    """What a worker that failed leaves: error.json in its folder and exit code 1."""
    spec = read_spec(job.exp_path)
    record = ErrorRecord(
        experiment_id=spec.experiment_id,
        cycle=spec.cycle,
        attempt=spec.attempt,
        category=category,  # type: ignore[arg-type]
        error_type="BackendError",
        message=message,
        traceback="Traceback ...",
        at=datetime.now(timezone.utc),
    )
    write_text_atomic(job.output_dir / ERROR_FILE, record.model_dump_json())
    return Outcome(returncode=1, timed_out=False, wall_s=0.1)


class NeverRunner:
    """A runner for campaigns where nothing should run."""

    name = "never"
    fresh_container_per_run = False

    def __init__(self) -> None:
        self.entered = self.exited = False

    def __enter__(self) -> NeverRunner:
        self.entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.exited = True

    def run(self, job: Job) -> Outcome:
        pytest.fail(f"runner was asked to run {job.exp_path}")


class FakeWorkerRunner(NeverRunner):
    """Plays the worker: writes result.json (or error.json) next to exp.json, as a worker does."""

    name = "fake"

    def __init__(self, result_for: ResultFor, fail: set[int] | None = None) -> None:
        super().__init__()
        self.result_for = result_for
        self.fail = fail or set()
        self.jobs: list[Job] = []

    def run(self, job: Job) -> Outcome:
        self.jobs.append(job)
        spec = read_spec(job.exp_path)
        job.log_path.write_text("loading\nworking\n", encoding="utf-8")
        if len(self.jobs) in self.fail:
            return worker_failed(job, "out of memory")
        result = self.result_for(spec)
        write_text_atomic(job.output_dir / RESULT_FILE, result.model_dump_json())
        return Outcome(returncode=0, timed_out=False, wall_s=0.1)


class RecordingEvents(Events):
    def __init__(self) -> None:
        self.log: list[str] = []

    def campaign_started(self, manifest: Any, to_run: list[ManifestEntry]) -> None:
        self.log.append(f"campaign:{len(to_run)}")

    def experiment_started(self, entry: ManifestEntry) -> None:
        assert entry.status == "running"
        self.log.append(f"start:{entry.key}")

    def experiment_finished(self, entry: ManifestEntry, result: ExperimentResult | None) -> None:
        self.log.append(f"end:{entry.key}:{entry.status}:{result is not None}")


def small_campaign(tmp_path: Path, write_yaml: WriteYaml, cycles: int = 1) -> Path:
    yaml = (
        f"name: small\ncycles: {cycles}\ntimeout_s: 30\n"
        "gaps: {between_experiments_s: 0, between_cycles_s: 0}\n"
        "grid:\n  batch_size: [1, 2]\n"
    )
    return create_campaign(load_campaign(write_yaml(yaml)), output_root=tmp_path / "out")


# ------------------------------------------------------------------------------- recovery


def test_running_entry_with_valid_result_is_recovered_without_running(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    store = ManifestStore(directory)
    m = store.load()
    for e in m.entries:
        spec = spec_of(directory, e)
        write_text_atomic(
            (directory / e.exp_path).parent / RESULT_FILE,
            result_for(spec).model_dump_json(),
        )
    m.entries[0].status = "running"  # the orchestrator died after the worker finished
    m.entries[0].attempts = 1
    store.save(m)

    runner = NeverRunner()
    events = RecordingEvents()
    summary = run_campaign_dir(directory, runner=runner, events=events)

    assert summary.ran == []
    assert [e.key for e in summary.recovered] == [e.key for e in m.entries]
    assert summary.failed == []
    assert not summary.interrupted
    assert runner.entered and runner.exited
    assert events.log == ["campaign:0"]
    saved = store.load()
    assert [e.status for e in saved.entries] == ["done", "done"]
    for e in saved.entries:
        assert e.result_path == f"{e.experiment_id}/cycle-{e.cycle}/{RESULT_FILE}"
        assert e.finished_at is not None
        assert e.error is None
    assert saved.entries[0].attempts == 1
    assert (directory / RESULTS_CSV).is_file()


def test_incomplete_result_is_not_recovered_and_the_entry_runs(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    store = ManifestStore(directory)
    m = store.load()
    first, second = m.entries
    spec = spec_of(directory, first)
    good = result_for(spec).model_dump_json()
    write_text_atomic((directory / first.exp_path).parent / RESULT_FILE, good)
    write_text_atomic((directory / second.exp_path).parent / RESULT_FILE, good[: len(good) // 2])
    second.status = "running"
    store.save(m)

    runner = FakeWorkerRunner(result_for)
    summary = run_campaign_dir(directory, runner=runner)
    assert [e.key for e in summary.recovered] == [first.key]
    assert [e.key for e in summary.ran] == [second.key]
    assert [j.exp_path for j in runner.jobs] == [directory / second.exp_path]
    assert [e.status for e in store.load().entries] == ["done", "done"]


def test_done_entries_are_left_alone(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    runner = FakeWorkerRunner(result_for)
    run_campaign_dir(directory, runner=runner)
    assert len(runner.jobs) == 2
    before = (directory / MANIFEST_FILE).read_text(encoding="utf-8")
    summary = run_campaign_dir(directory, runner=NeverRunner())
    assert summary.ran == summary.recovered == []
    after = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert [e["status"] for e in after["entries"]] == ["done", "done"]
    assert after["entries"] == json.loads(before)["entries"]


def test_other_schema_fingerprint_is_refused(tmp_path: Path, write_yaml: WriteYaml) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    store = ManifestStore(directory)
    m = store.load()
    m.schema_fingerprint = "ffffffffffffffff"
    store.save(m)
    with pytest.raises(ConfigError) as info:
        run_campaign_dir(directory, runner=NeverRunner())
    assert "ffffffffffffffff" in str(info.value)
    assert schema_fingerprint() in str(info.value)


# --------------------------------------------------------------------------- the run loop


def test_run_loop_with_a_fake_worker(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml, cycles=2)
    runner = FakeWorkerRunner(result_for, fail={2})
    events = RecordingEvents()
    summary = run_campaign_dir(directory, runner=runner, events=events)

    m = ManifestStore(directory).load()
    keys = [e.key for e in m.entries]
    assert [j.exp_path for j in runner.jobs] == [directory / e.exp_path for e in m.entries]
    assert [e.status for e in m.entries] == ["done", "failed", "done", "done"]
    assert all(e.runner == "fake" for e in m.entries)
    assert all(e.attempts == 1 for e in m.entries)
    assert m.entries[1].error == "BackendError: out of memory"
    assert m.entries[1].result_path is None
    assert [e.key for e in summary.failed] == [keys[1]]
    assert [e.key for e in summary.ran] == keys
    assert events.log[0] == "campaign:4"
    assert events.log[1:5] == [
        f"start:{keys[0]}",
        f"end:{keys[0]}:done:True",
        f"start:{keys[1]}",
        f"end:{keys[1]}:failed:False",
    ]

    job = runner.jobs[0]
    assert job.timeout_s == 30
    assert job.output_dir == (directory / m.entries[0].exp_path).parent
    assert job.log_path == job.output_dir / "worker.log"
    assert job.env == {
        "LEM_CAMPAIGN_ID": directory.name,
        "LEM_CYCLE": "1",
        "LEM_TOTAL_CYCLES": "2",
        "LEM_EXPERIMENT_ID": m.entries[0].experiment_id,
        "LEM_ATTEMPT": "1",
    }
    assert runner.jobs[2].env["LEM_CYCLE"] == "2"


def test_retry_increments_attempt_and_rewrites_spec(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    run_campaign_dir(directory, runner=FakeWorkerRunner(result_for, fail={1}))
    m = ManifestStore(directory).load()
    failed = m.entries[0]
    assert failed.status == "failed"
    assert (directory / failed.exp_path).parent.joinpath(ERROR_FILE).is_file()

    # a failed entry is not run again unless asked
    summary = run_campaign_dir(directory, runner=NeverRunner())
    assert summary.ran == []
    retry = FakeWorkerRunner(result_for)
    summary = run_campaign_dir(directory, runner=retry, retry_failed=True)
    assert [e.key for e in summary.ran] == [failed.key]
    m = ManifestStore(directory).load()
    assert m.entries[0].status == "done"
    assert m.entries[0].attempts == 2
    assert m.entries[0].error is None
    assert read_spec(directory / failed.exp_path).attempt == 2
    # the stale error.json of the failed attempt is gone
    assert not (directory / failed.exp_path).parent.joinpath(ERROR_FILE).exists()


def test_timeout_override_and_timed_out_outcome(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    class TimingOut(FakeWorkerRunner):
        def run(self, job: Job) -> Outcome:
            self.jobs.append(job)
            job.log_path.write_text("step 1\nstep 2\n", encoding="utf-8")
            return Outcome(returncode=None, timed_out=True, wall_s=job.timeout_s)

    directory = small_campaign(tmp_path, write_yaml)
    runner = TimingOut(result_for)
    summary = run_campaign_dir(directory, runner=runner, timeout_s=0.5)
    assert [j.timeout_s for j in runner.jobs] == [0.5, 0.5]
    (first, _) = summary.failed
    assert first.error is not None
    assert first.error.startswith("timed out after 0.5 s; worker killed.")
    assert "step 1 | step 2" in first.error


def test_exit_without_result_reports_signal_and_log(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    class Killed(FakeWorkerRunner):
        def run(self, job: Job) -> Outcome:
            self.jobs.append(job)
            return Outcome(returncode=-9, timed_out=False, wall_s=0.1)

    directory = small_campaign(tmp_path, write_yaml)
    summary = run_campaign_dir(directory, runner=Killed(result_for))
    errors = [e.error or "" for e in summary.failed]
    assert len(errors) == 2
    assert all(
        "was killed by SIGKILL (not sent by lem: often the kernel's out-of-memory killer) "
        "without writing a result" in e
        for e in errors
    )
    assert all("(no worker log)" in e for e in errors)


def test_complete_result_is_kept_when_the_worker_then_exits_badly(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    """result.json is written last, atomically: once it is complete the measurement is, and
    a crash after it (e.g. at interpreter exit) must not throw it away; it is noted."""

    class ResultThenCrash(FakeWorkerRunner):
        def run(self, job: Job) -> Outcome:
            super().run(job)
            return Outcome(returncode=-11, timed_out=False, wall_s=0.1)

    directory = small_campaign(tmp_path, write_yaml)
    summary = run_campaign_dir(directory, runner=ResultThenCrash(result_for))
    assert summary.failed == []
    for entry in ManifestStore(directory).load().entries:
        assert entry.status == "done"
        assert entry.warnings == [
            "the worker was killed by SIGSEGV after writing a complete result.json; "
            "the result is kept"
        ]
        assert [(a.attempt, a.status) for a in entry.attempt_history] == [(1, "done")]


# ------------------------------------------------------------------------------- collation


def test_collate_one_row_per_entry_with_failures(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml, cycles=2)
    store = ManifestStore(directory)
    m = store.load()
    done, failed, _pending, broken = m.entries
    spec = spec_of(directory, done)
    result = result_for(spec)
    write_text_atomic(
        directory / done.exp_path.replace(EXP_FILE, RESULT_FILE), result.model_dump_json()
    )
    done.status, done.attempts = "done", 1
    done.result_path = done.exp_path.replace(EXP_FILE, RESULT_FILE)
    failed.status, failed.attempts, failed.error = "failed", 2, "BackendError: out of memory"
    broken.status, broken.attempts = "done", 1
    broken.result_path = broken.exp_path.replace(EXP_FILE, RESULT_FILE)  # never written
    store.save(m)

    frame = collate(directory, m)

    assert len(frame) == 4
    assert list(frame.columns[:6]) == [
        "experiment_id",
        "cycle",
        "status",
        "attempts",
        "runner",
        "error",
    ]
    assert list(frame["experiment_id"]) == [e.experiment_id for e in m.entries]
    assert list(frame["cycle"]) == [1, 1, 2, 2]
    assert list(frame["status"]) == ["done", "failed", "pending", "failed"]
    assert list(frame["attempts"]) == [1, 2, 0, 1]
    assert frame.loc[1, "error"] == "BackendError: out of memory"
    assert frame.loc[3, "error"] == "result.json missing or unreadable"
    assert pd.isna(frame.loc[0, "error"])

    row = frame.loc[0]
    assert row["config.batch_size"] == 1
    assert row["config.pytorch.attn_implementation"] == "sdpa"
    assert row["latency.p50_s"] == 1.0
    assert row["output_tokens_per_s"] == 20.0
    assert row["environment.device"] == "cpu"
    assert row["environment.library_versions.torch"] == "2.0"
    assert row["measurement_warnings"] == "no energy source; short window"
    assert "warnings" not in frame.columns
    assert pd.isna(row["energy.energy_raw_j"])
    assert "request_latencies_s" not in frame.columns
    # rows without a result have no measurements
    assert pd.isna(frame.loc[1, "output_tokens_per_s"])
    assert pd.isna(frame.loc[2, "config.batch_size"])

    csv = pd.read_csv(directory / RESULTS_CSV)
    parquet = pd.read_parquet(directory / RESULTS_PARQUET)
    for table in (csv, parquet):
        assert list(table.columns) == list(frame.columns)
        assert list(table["status"]) == ["done", "failed", "pending", "failed"]
    assert not list(directory.glob(".*.tmp"))


def test_collate_of_fresh_campaign_lists_every_entry_pending(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    directory = small_campaign(tmp_path, write_yaml, cycles=3)
    m = ManifestStore(directory).load()
    frame = collate(directory, m)
    assert len(frame) == 6
    assert set(frame["status"]) == {"pending"}
    assert list(frame.columns) == [
        "experiment_id",
        "cycle",
        "status",
        "attempts",
        "runner",
        "error",
        "gpus",
        "facility_energy_j",
        "co2_g",
    ]


# --------------------------------------------------------------- settling what a crash left


class NoticeEvents(RecordingEvents):
    def __init__(self) -> None:
        super().__init__()
        self.notices: list[str] = []

    def notice(self, message: str) -> None:
        self.notices.append(message)


def test_a_running_entry_without_result_was_lost_and_runs_again(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    store = ManifestStore(directory)
    m = store.load()
    lost = m.entries[0]
    lost.status, lost.attempts = "running", 1  # its orchestrator died mid-run
    out_dir = (directory / lost.exp_path).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "worker.log").write_text("loading\n")
    (out_dir / ".result.json.x1.tmp").write_text('{"half": ')  # a write cut short
    (directory / ".manifest.json.x2.tmp").write_text("{")
    store.save(m)

    runner = FakeWorkerRunner(result_for)
    run_campaign_dir(directory, runner=runner)
    first, second = store.load().entries
    assert (first.status, first.attempts) == ("done", 2)
    assert [(a.attempt, a.status) for a in first.attempt_history] == [(1, "lost"), (2, "done")]
    assert first.attempt_history[0].reason == (
        "the orchestrator stopped while it ran (killed or crashed); no result"
    )
    assert (second.status, second.attempts) == ("done", 1)
    assert not list(directory.rglob(".*.tmp"))


def test_a_done_entry_whose_result_vanished_runs_again_with_a_notice(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    run_campaign_dir(directory, runner=FakeWorkerRunner(result_for))
    store = ManifestStore(directory)
    gone = store.load().entries[1]
    (directory / str(gone.result_path)).unlink()

    events = NoticeEvents()
    runner = FakeWorkerRunner(result_for)
    run_campaign_dir(directory, runner=runner, events=events)
    assert events.notices == [f"{gone.key} was done but its result.json is missing: it runs again"]
    assert [j.exp_path for j in runner.jobs] == [directory / gone.exp_path]
    rerun = store.load().entries[1]
    assert (rerun.status, rerun.attempts) == ("done", 2)
    assert [a.status for a in rerun.attempt_history] == ["done", "lost", "done"]


@pytest.mark.parametrize("flaw", ["other cycle", "other campaign", "timeseries missing"])
def test_a_result_that_is_not_this_entrys_complete_result_is_not_recovered(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor, flaw: str
) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    store = ManifestStore(directory)
    m = store.load()
    entry = m.entries[0]
    spec = spec_of(directory, entry)
    overrides: dict[str, object] = {
        "other cycle": {"cycle": 2},
        "other campaign": {"campaign_id": "elsewhere_20250101T000000Z"},
        "timeseries missing": {"timeseries_file": "timeseries.parquet"},
    }[flaw]
    result = result_for(spec, **overrides)
    write_text_atomic((directory / entry.exp_path).parent / RESULT_FILE, result.model_dump_json())
    entry.status, entry.attempts = "running", 1
    store.save(m)

    runner = FakeWorkerRunner(result_for)
    summary = run_campaign_dir(directory, runner=runner)
    assert summary.recovered == []
    assert [j.exp_path for j in runner.jobs] == [directory / e.exp_path for e in m.entries]


# ----------------------------------------------------------------------------------- retries


class FailingRunner(FakeWorkerRunner):
    """Fails the first `failures` attempts of every entry with an error.json of `category`."""

    def __init__(self, result_for: ResultFor, failures: int, category: str) -> None:
        super().__init__(result_for)
        self.failures, self.category = failures, category

    def run(self, job: Job) -> Outcome:
        spec = read_spec(job.exp_path)
        if spec.attempt > self.failures:
            return super().run(job)
        self.jobs.append(job)
        return worker_failed(job, f"attempt {spec.attempt} broke", self.category)


def test_retries_from_the_campaign_file_with_each_reason_kept(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    yaml = "name: r\ncycles: 1\nretries: 2\ngrid:\n  batch_size: [1, 2]\n"
    directory = create_campaign(load_campaign(write_yaml(yaml)), output_root=tmp_path / "out")
    events = RecordingEvents()
    runner = FailingRunner(result_for, failures=2, category="backend")
    summary = run_campaign_dir(directory, runner=runner, events=events)
    assert summary.failed == []
    for entry in ManifestStore(directory).load().entries:
        assert (entry.status, entry.attempts) == ("done", 3)
        assert [(a.attempt, a.status, a.reason) for a in entry.attempt_history] == [
            (1, "failed", "BackendError: attempt 1 broke"),
            (2, "failed", "BackendError: attempt 2 broke"),
            (3, "done", None),
        ]
    assert len(runner.jobs) == 6
    # one "end" per entry: a retried attempt is not the entry's end
    assert sum(line.startswith("end:") for line in events.log) == 2


def test_retries_run_out_and_the_cli_value_overrides_the_file(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    directory = small_campaign(tmp_path, write_yaml)  # the file sets no retries
    runner = FailingRunner(result_for, failures=5, category="backend")
    summary = run_campaign_dir(directory, runner=runner, retries=1)
    assert [(e.status, e.attempts) for e in summary.failed] == [("failed", 2), ("failed", 2)]
    assert len(runner.jobs) == 4


@pytest.mark.parametrize("category", ["config", "oom"])
def test_failures_that_recur_with_the_same_config_are_not_retried(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor, category: str
) -> None:
    directory = small_campaign(tmp_path, write_yaml)
    runner = FailingRunner(result_for, failures=1, category=category)
    summary = run_campaign_dir(directory, runner=runner, retries=3)
    expected = "oom" if category == "oom" else "failed"
    assert [(e.status, e.attempts) for e in summary.failed] == [(expected, 1), (expected, 1)]


def test_an_engine_child_running_out_of_memory_is_read_from_the_log(
    tmp_path: Path, write_yaml: WriteYaml, result_for: ResultFor
) -> None:
    """vLLM's engine runs in a child process: the worker only hears it died, the log says
    why."""

    class EngineDied(FakeWorkerRunner):
        def run(self, job: Job) -> Outcome:
            self.jobs.append(job)
            job.log_path.write_text(
                "(EngineCore pid=42) ValueError: No available memory for the cache blocks.\n"
                "RuntimeError: Engine core initialization failed. See root cause above.\n"
            )
            return worker_failed(job, "Engine core initialization failed. See root cause above.")

    directory = small_campaign(tmp_path, write_yaml)
    summary = run_campaign_dir(directory, runner=EngineDied(result_for))
    (first, _) = summary.failed
    assert first.status == "oom"
    assert first.error is not None
    assert first.error.startswith("out of memory with model=")
    assert "batch_size=1" in first.error
    assert first.error.endswith(
        "(EngineCore pid=42) ValueError: No available memory for the cache blocks."
    )


def test_the_campaign_to_resume_is_never_guessed_past_a_damaged_one(
    loaded: Campaign, tmp_path: Path
) -> None:
    """Issue 28.2, the conductor's rule that `lem resume` and api.resume() share: every
    campaign whose manifest cannot be read is named with its `lem repair` hint; with a
    readable unfinished one beside, that one is chosen; without, it is an error (exit 2)."""
    from llenergymeasure.conductor import campaign_to_resume

    root = tmp_path / "results"
    first, second = (create_campaign(loaded, output_root=root / n) for n in ("a", "b"))
    moved = [root / first.name, root / f"{second.name}-x"]
    first.rename(moved[0])
    second.rename(moved[1])
    (moved[1] / MANIFEST_FILE).unlink()  # deleted: its experiments.json still names it
    notices: list[str] = []
    assert campaign_to_resume(root, False, notices.append) == moved[0]
    (line,) = notices
    assert f"lem repair {moved[1]}" in line and "is missing" in line
    (moved[0] / MANIFEST_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError) as caught:
        campaign_to_resume(root, False, notices.append)
    assert caught.value.exit_code == 2
    assert all(f"lem repair {d}" in str(caught.value) for d in moved)
    assert campaign_to_resume(tmp_path / "empty", False, notices.append) is None
