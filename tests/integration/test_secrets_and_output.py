"""A real campaign (one experiment that runs, one that fails in its worker) started the way a
careless machine would: HF_TOKEN in the environment, a webhook URL holding a token in
.lem-config.yaml, umask 000. Nothing it leaves behind, and nothing it prints, may hold either
secret; no file may be world-writable; the webhook hears of every experiment and of the end;
and nothing a worker (transformers, torch) prints reaches the console.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lem_cli import (
    CLI_TIMEOUT_S,
    NO_GAPS_SETTINGS,
    explain,
    lem_cmd,
    lem_env,
    only_campaign_dir,
    tiny_campaign,
    write,
)
from webhook_server import Recorder, webhook_server

pytestmark = pytest.mark.integration

CAMPAIGN = tiny_campaign(
    "secrets", tail="experiments:\n  - {batch_size: 2}\n  - {pytorch: {device: cuda}}\n"
)


@dataclass
class Run:
    work: Path
    campaign_dir: Path
    console: list[subprocess.CompletedProcess[str]]
    hf_token: str
    webhook_secret: str
    recorder: Recorder
    slurm_secrets: tuple[str, str] = ("", "")

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.hf_token, self.webhook_secret, *self.slurm_secrets)


def lem_as_careless_user(
    work: Path, env: dict[str, str], *args: str | Path
) -> subprocess.CompletedProcess[str]:
    """`lem ARGS` under umask 000, the way a permissive shell would start it."""
    shell = "umask 000 && exec " + " ".join(f"'{a}'" for a in lem_cmd(*args))
    return subprocess.run(
        ["sh", "-c", shell],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("secrets")
    hf_token = "hf_" + secrets.token_hex(16)
    webhook_secret = "whsec" + secrets.token_hex(12)
    slurm = ("hf_" + secrets.token_hex(16), "sb" + secrets.token_hex(12))
    with webhook_server() as (url, recorder):
        write(
            work / ".lem-config.yaml",
            NO_GAPS_SETTINGS
            + "runner: local\ncarbon_intensity_g_per_kwh: 300\npue: 1.3\n"
            + f"webhooks:\n  urls: ['{url}/hooks/{webhook_secret}']\n  timeout_s: 5\n"
            # issue 27.3: recorded (and printed by -v) with the values redacted
            + f"slurm:\n  environment: {{HF_TOKEN: {slurm[0]}}}\n"
            + f"  extra_sbatch: ['--comment={slurm[1]}']\n",
        )
        write(work / "campaign.yaml", CAMPAIGN)
        env = {**lem_env(), "HF_TOKEN": hf_token}
        first = lem_as_careless_user(work, env, "campaign", "campaign.yaml", "-o", "out", "-v")
        assert first.returncode == 1, explain(first)  # one experiment fails, by design
        recorder.wait_for(3)
        campaign_dir = only_campaign_dir(work / "out")
        console = [
            first,
            lem_as_careless_user(work, env, "results", campaign_dir, "-v"),
            lem_as_careless_user(work, env, "results", campaign_dir, "--json"),
            lem_as_careless_user(work, env, "report", campaign_dir),
            lem_as_careless_user(work, env, "doctor", "--json"),
        ]
        yield Run(work, campaign_dir, console, hf_token, webhook_secret, recorder, slurm)


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_no_secret_in_any_file_or_output(run: Run) -> None:
    files = every_file(run.work)
    assert any(p.name == "report.html" for p in files)
    assert any(p.name == "error.json" for p in files)
    assert any(p.name == "worker.log" for p in files)
    for path in files:
        if path.name == ".lem-config.yaml":
            continue  # where the user put the webhook URL
        data = path.read_bytes()
        for secret in run.secrets:
            assert secret.encode() not in data, f"{secret[:6]}... in {path}"
    for proc in run.console:
        for secret in run.secrets:
            assert secret not in proc.stdout + proc.stderr, explain(proc)


def test_the_settings_are_recorded_without_the_url(run: Run) -> None:
    manifest = json.loads((run.campaign_dir / "manifest.json").read_text())
    recorded = manifest["execution"]["settings"]
    assert recorded["pue"] == 1.3 and recorded["carbon_intensity_g_per_kwh"] == 300
    assert len(recorded["webhook_hosts"]) == 1
    assert recorded["webhook_hosts"][0].startswith("http://127.0.0.1:")
    assert recorded["sources"]["pue"] == str(run.work / ".lem-config.yaml")
    assert recorded["sources"]["results_dir"] == "--output-dir"
    verbose = run.console[0].stderr
    assert "setting pue = 1.3" in verbose
    assert "setting webhook_hosts = ['http://127.0.0.1:" in verbose
    assert recorded["slurm"]["environment"] == {"HF_TOKEN": "<redacted>"}
    assert recorded["slurm"]["extra_sbatch"] == ["--comment=<redacted>"]
    assert "'extra_sbatch': ['--comment=<redacted>']" in verbose
    data = json.loads(run.console[2].stdout)
    assert data["settings"]["pue"] == 1.3
    assert [f["error"] for f in data["failed"]] == [
        "BackendError: pytorch.device is 'cuda' but torch sees no CUDA device"
    ]


def test_the_webhook_heard_every_experiment_and_the_end(run: Run) -> None:
    bodies = [r.body for r in run.recorder.received]
    assert [b["event"] for b in bodies] == [
        "experiment_done",
        "experiment_failed",
        "campaign_finished",
    ]
    assert all(r.path == f"/hooks/{run.webhook_secret}" for r in run.recorder.received)
    assert bodies[1]["error"].startswith("BackendError")
    assert bodies[2]["counts"] == {
        "done": 1,
        "failed": 1,
        "oom": 0,
        "interrupted": 0,
        "running": 0,
        "pending": 0,
    }
    assert bodies[2]["campaign_dir"] == str(run.campaign_dir)


def test_nothing_is_world_writable_and_everything_is_ours(run: Run) -> None:
    paths = [run.campaign_dir, *run.campaign_dir.rglob("*")]
    assert any(p.name == "results.parquet" for p in paths)
    assert any(p.name == "report.html" for p in paths)
    for path in paths:
        info = path.lstat()
        assert not info.st_mode & stat.S_IWOTH, f"{oct(info.st_mode)} {path}"
        assert info.st_uid == os.getuid(), path


def test_worker_output_stays_in_worker_logs(run: Run) -> None:
    """Not one line a worker printed (transformers' progress bars, torch warnings, the
    worker's own log) is on the console; each is in its experiment's worker.log."""
    logs = list(run.campaign_dir.glob("*/cycle-1/worker.log"))
    assert len(logs) == 2
    worker_lines = {
        line.strip()
        for log in logs
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    }
    assert any("lem.worker" in line for line in worker_lines)
    campaign = run.console[0]
    console_lines = {line.strip() for line in (campaign.stdout + campaign.stderr).splitlines()}
    assert not worker_lines & console_lines, explain(campaign)
    assert "Loading weights" not in campaign.stdout + campaign.stderr
    assert "lem.worker" not in campaign.stdout + campaign.stderr
