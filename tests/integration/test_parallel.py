"""--gpus on a CPU-only machine: the same scheduler runs real workers side by side, each
pinned (CUDA_VISIBLE_DEVICES) to its own "GPU", and the manifest stays consistent."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import (
    SEEDS_1_2,
    explain,
    lem_cmd,
    lem_env,
    load_manifest,
    only_campaign_dir,
    process_env,
    tiny_campaign,
    workers_under,
    write,
)

pytestmark = pytest.mark.integration

CAMPAIGN = tiny_campaign("parallel", cycles=2, max_output_tokens=16, tail=SEEDS_1_2)


def test_two_workers_at_once_each_pinned_to_its_gpu(tmp_path: Path) -> None:
    campaign_file = write(tmp_path / "parallel.yaml", CAMPAIGN)
    out_root = tmp_path / "out"
    seen: dict[int, dict[str, str]] = {}  # worker pid -> its GPU environment
    with (tmp_path / "lem.out").open("w+", encoding="utf-8") as log:
        proc = subprocess.Popen(
            lem_cmd("campaign", campaign_file, "-o", out_root, "--gpus", "0,1"),
            cwd=tmp_path,
            env=lem_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            for pid in workers_under(out_root):
                try:
                    env = process_env(pid)
                except OSError:  # it ended meanwhile
                    continue
                keys = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "LEM_CYCLE")
                seen[pid] = {k: env.get(k, "") for k in keys}
            time.sleep(0.05)
        returncode = proc.wait(timeout=10)
        log.seek(0)
        output = log.read()
    assert returncode == 0, output

    campaign_dir = only_campaign_dir(out_root)
    entries = load_manifest(campaign_dir).entries
    assert [e.status for e in entries] == ["done"] * 4
    for cycle in (1, 2):
        in_cycle = [e for e in entries if e.cycle == cycle]
        assert sorted(e.gpus or [] for e in in_cycle) == [[0], [1]]
        a, b = in_cycle
        assert a.started_at and b.started_at and a.finished_at and b.finished_at
        # side by side: the second started before the first had finished
        assert b.started_at < a.finished_at
    cycle1_end = max(e.finished_at for e in entries if e.cycle == 1 and e.finished_at)
    cycle2_start = min(e.started_at for e in entries if e.cycle == 2 and e.started_at)
    assert cycle1_end <= cycle2_start  # the next cycle waits for the whole set

    # every worker saw exactly its own GPU, in nvidia-smi (PCI bus) order, as its log says (a
    # forked worker sets its environment after the fork: /proc shows its fork server's)
    assert seen, "no worker process was ever seen"
    for entry in entries:
        log_text = (campaign_dir / Path(entry.exp_path).parent / "worker.log").read_text()
        assert f"GPUs: CUDA_VISIBLE_DEVICES={entry.gpus[0]} CUDA_DEVICE_ORDER=PCI_BUS_ID" in (
            log_text
        ), log_text[-2000:]
    table = pd.read_csv(campaign_dir / "results.csv")
    assert sorted(table["gpus"].astype(str)) == ["0", "0", "1", "1"]
    assert "on GPU 0:" in output
    assert "on GPU 1:" in output


def test_gpus_flag_is_validated(tmp_path: Path) -> None:
    campaign_file = write(tmp_path / "parallel.yaml", CAMPAIGN)
    proc = subprocess.run(
        lem_cmd("campaign", campaign_file, "-o", tmp_path / "out", "--gpus", "0,x"),
        cwd=tmp_path,
        env=lem_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, explain(proc)
    assert "--gpus '0,x': expected GPU indices separated by commas" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
