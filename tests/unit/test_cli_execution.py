"""The CLI's execution options: default cycles, --cycles/--order overrides, the dry-run
schedule, and bad settings or flags (exit 2, no traceback, nothing created)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_errors import one_line, run_cli

CAMPAIGN = "name: x\ngrid:\n  batch_size: [1, 2, 4]\n"


def dry_run(tmp_path: Path, *flags: str, text: str = CAMPAIGN) -> dict[str, object]:
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    proc = run_cli("campaign", "c.yaml", "--dry-run", "--json", *flags, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def test_cli_runs_three_cycles_unless_told(tmp_path: Path) -> None:
    data = dry_run(tmp_path)
    assert str(data["title"]).startswith("3 experiments x 3 cycles, order interleaved")
    assert len(data["experiments"]) == 9  # type: ignore[arg-type]
    assert str(dry_run(tmp_path, "--cycles", "2")["title"]).startswith("3 experiments x 2 cycles")
    in_file = dry_run(tmp_path, text=CAMPAIGN + "cycles: 5\n")
    assert str(in_file["title"]).startswith("3 experiments x 5 cycles")


def test_dry_run_lists_the_schedule_and_the_gaps(tmp_path: Path) -> None:
    (tmp_path / ".lem-config.yaml").write_text("gaps: {between_experiments_s: 2}\n")
    data = dry_run(tmp_path, "--order", "grouped", "--cycles", "2")
    title = str(data["title"])
    assert "order grouped" in title
    assert "gaps 2 s between experiments, 30 s between cycles" in title
    rows = [str(r) for r in data["experiments"]]  # type: ignore[attr-defined]
    # grouped: each experiment's cycles back to back
    assert [r.split()[2] for r in rows] == ["1", "2"] * 3
    assert [r.split()[0] for r in rows][::2] == [r.split()[0] for r in rows][1::2]


def test_long_dry_run_table_is_cut_and_json_lists_every_row(tmp_path: Path) -> None:
    big = (
        "name: big\nbase: {n_prompts: 32}\n"
        "grid:\n  batch_size: [1, 2, 4, 8, 16, 32]\n  seed: [1, 2, 3, 4, 5, 6]\n"
    )
    assert len(dry_run(tmp_path, "--cycles", "2", text=big)["experiments"]) == 72  # type: ignore[arg-type]
    proc = run_cli("campaign", "c.yaml", "--dry-run", "--cycles", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" cycle ") == 50
    assert "... and 22 more (--json lists them all)" in proc.stdout


def test_shuffled_dry_run_names_its_seed(tmp_path: Path) -> None:
    data = dry_run(tmp_path, text=CAMPAIGN + "order: shuffled\norder_seed: 4\ncycles: 2\n")
    assert "order shuffled, order_seed 4" in str(data["title"])


@pytest.mark.parametrize(
    ("files", "args", "expected"),
    [
        (
            {".lem-config.yaml": "gaps:\n  between_cycle_s: 3\n"},
            (),
            ".lem-config.yaml, line 2, at gaps.between_cycle_s: unknown key 'between_cycle_s'; "
            "did you mean 'between_cycles_s'?",
        ),
        (
            {"c.yaml": "name: x\nstatistics:\n  group_by: [batchsize]\n"},
            (),
            "c.yaml, line 3, at statistics.group_by: group_by key 'batchsize' is not an "
            "experiment parameter",
        ),
        (
            {"c.yaml": "name: x\norder: grouped\norder_seed: 3\n"},
            (),
            "order_seed only applies to `order: shuffled`, not 'grouped'",
        ),
        ({}, ("--gpus", "one"), "--gpus 'one': expected GPU indices separated by commas"),
        ({}, ("--order", "random"), "Invalid value for '--order'"),
        ({}, ("--cycles", "0"), "Invalid value for '--cycles'"),
    ],
)
def test_bad_execution_input_exits_2(
    tmp_path: Path, files: dict[str, str], args: tuple[str, ...], expected: str
) -> None:
    for name, content in {"c.yaml": CAMPAIGN, **files}.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    proc = run_cli("campaign", "c.yaml", "-o", "out", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in one_line(proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_and_library_plan_the_same_cycles_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One default for a campaign file without `cycles`, whichever face runs it."""
    from llenergymeasure import conductor
    from llenergymeasure.config.grid import load_campaign

    campaign_file = tmp_path / "c.yaml"
    campaign_file.write_text("name: c\nbase: {n_prompts: 2}\n")
    (tmp_path / ".lem-config.yaml").write_text("runner: local\n")
    monkeypatch.chdir(tmp_path)
    for face in ("cli", "api"):
        plan = conductor.plan_campaign(
            lambda keys, limit: load_campaign(campaign_file, keys, max_experiments=limit),
            conductor.Overrides(face=face),  # type: ignore[arg-type]
        )
        assert plan.cycles == conductor.DEFAULT_CYCLES == 3
    proc = run_cli("campaign", campaign_file, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 experiments x 3 cycles" in proc.stdout
