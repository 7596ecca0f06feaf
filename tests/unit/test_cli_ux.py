"""`lem init`, `lem doctor`, the campaign size limit (--yes), quiet/verbose/JSON output of
`lem results` and `lem resume`: through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_errors import one_line, run_cli
from typer.testing import CliRunner
from unit_results import finish_campaign

from llenergymeasure.cli import app
from llenergymeasure.config import load_campaign
from llenergymeasure.config.settings import SETTINGS_FILE, UserSettings, load_settings
from llenergymeasure.cpu_features import CPUINFO_ENV
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import ManifestStore
from llenergymeasure.permissions import no_world_write
from llenergymeasure.starter import CAMPAIGN_FILE, Answers, render, write

# ------------------------------------------------------------------------------------ lem init


def test_init_non_interactive_writes_two_valid_commented_files(tmp_path: Path) -> None:
    target = tmp_path / "My Project!"
    proc = run_cli("init", target, "--non-interactive", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    campaign_text = (target / CAMPAIGN_FILE).read_text()
    settings_text = (target / SETTINGS_FILE).read_text()
    assert campaign_text.startswith("# My-Project: a starter campaign written by `lem init`")
    assert settings_text.count("#") > 10  # commented
    campaign = load_campaign(target / CAMPAIGN_FILE)
    assert campaign.config.name == "My-Project"
    assert [e.config.batch_size for e in campaign.experiments] == [1, 8]
    assert campaign.experiments[0].config.model == "builtin:tiny-llama"
    settings = load_settings(target, env={})
    assert settings.results_dir == "results"
    assert settings.max_experiments == 10_000
    assert settings.webhooks is None and settings.pue is None
    # the commented webhook section is valid once uncommented
    uncommented = settings_text.replace("# webhooks:", "webhooks:").replace("#   ", "  ")
    assert yaml.safe_load(uncommented)["webhooks"]["events"] == [
        "experiment_done",
        "experiment_failed",
        "campaign_finished",
    ]
    assert f"wrote {target / CAMPAIGN_FILE}" in proc.stdout
    # and the starter campaign runs as written: its dry run lists 2 experiments x 3 cycles
    dry = run_cli("campaign", CAMPAIGN_FILE, "--dry-run", "--json", cwd=target)
    assert dry.returncode == 0, dry.stderr
    assert len(json.loads(dry.stdout)["experiments"]) == 6


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("runner: local\n")
    proc = run_cli("init", tmp_path, "--non-interactive", cwd=tmp_path)
    assert proc.returncode == 2
    assert "already exists; use --force to overwrite" in one_line(proc.stderr)
    assert (tmp_path / SETTINGS_FILE).read_text() == "runner: local\n"
    assert not (tmp_path / CAMPAIGN_FILE).exists()  # nothing half-written
    forced = run_cli("init", tmp_path, "--non-interactive", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "results_dir" in (tmp_path / SETTINGS_FILE).read_text()


def test_init_asks_and_writes_the_answers(tmp_path: Path) -> None:
    answers = "\n".join(
        [
            *("energy-sweep", "builtin:tiny-llama", "pytorch", "1, 2, 4", "2", "fp16"),
            *("out", "local", "400", ""),
        ]
    )
    result = CliRunner().invoke(app, ["init", str(tmp_path)], input=answers + "\n")
    assert result.exit_code == 0, result.output
    campaign = load_campaign(tmp_path / CAMPAIGN_FILE)
    assert campaign.config.name == "energy-sweep"
    assert campaign.config.cycles == 2
    assert [e.config.batch_size for e in campaign.experiments] == [1, 2, 4]
    assert {e.config.precision for e in campaign.experiments} == {"fp16"}
    settings = load_settings(tmp_path, env={})
    assert (settings.results_dir, settings.runner) == ("out", "local")
    assert (settings.carbon_intensity_g_per_kwh, settings.pue) == (400.0, None)


def lem_init_with_input(directory: Path, answers: list[str]) -> subprocess.CompletedProcess[str]:
    """The real `lem init` in a subprocess, its answers typed on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "llenergymeasure.cli", "init", str(directory)],
        input="\n".join(answers) + "\n",
        capture_output=True,
        text=True,
        cwd=directory,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
        check=False,
    )


def test_init_checks_each_answer_when_given_and_asks_again(tmp_path: Path) -> None:
    answers = [
        *("bad name!", "sweep"),  # name
        "",  # model
        *("pytorch,nope", ""),  # backends
        *("1,x", "0", "1,4"),  # batch sizes: not numbers, then out of range
        *("0", "2"),  # cycles
        *("bf17", ""),  # precision: the default (fp32 without a GPU, bf16 with one)
        *("/elsewhere/results", "n", "../up", "", "mine"),  # outside the tree: refused twice
        "",  # runner
        *("abc", "400"),  # carbon intensity
        "",  # PUE
    ]
    proc = lem_init_with_input(tmp_path, answers)
    assert proc.returncode == 0, proc.stderr
    retries = proc.stderr.count("not valid:")
    assert retries == 9, proc.stderr
    assert "'bad name!'" in proc.stderr and "unknown backend 'nope'" in proc.stderr
    assert proc.stdout.count("write results there?") == 2
    campaign = load_campaign(tmp_path / CAMPAIGN_FILE)
    assert (campaign.config.name, campaign.config.cycles) == ("sweep", 2)
    assert [e.config.batch_size for e in campaign.experiments] == [1, 4]
    settings = load_settings(tmp_path, env={})
    assert (settings.results_dir, settings.carbon_intensity_g_per_kwh) == ("mine", 400.0)


def test_init_results_dir_outside_the_tree_when_confirmed(tmp_path: Path) -> None:
    elsewhere = tmp_path.parent / f"{tmp_path.name}-results"
    proc = lem_init_with_input(tmp_path, ["", "", "", "", "", "", str(elsewhere), "y", "", "", ""])
    assert proc.returncode == 0, proc.stderr
    assert load_settings(tmp_path, env={}).results_dir == str(elsewhere)


def test_init_suggests_bf16_with_a_gpu_fp32_without() -> None:
    assert Answers(has_gpu=True).chosen_precision == "bf16"
    assert Answers(has_gpu=False).chosen_precision == "fp32"
    assert Answers(has_gpu=True, precision="fp16").chosen_precision == "fp16"


def test_several_backends_get_a_backend_dimension(tmp_path: Path) -> None:
    campaign_text, _ = render(Answers(backends=["pytorch", "vllm"], batch_sizes=[4]))
    assert '  backend: ["pytorch", "vllm"]\n' in campaign_text
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text)
    backends = [e.config.backend for e in load_campaign(path).experiments]
    assert backends == ["pytorch", "vllm"]


def test_without_a_gpu_the_starter_settings_have_no_gaps(tmp_path: Path) -> None:
    write(tmp_path, Answers(has_gpu=False), force=False)
    gaps = load_settings(tmp_path, env={}).gaps
    assert (gaps.between_experiments_s, gaps.between_cycles_s) == (0.0, 0.0)
    assert load_campaign(tmp_path / CAMPAIGN_FILE).experiments[0].config.precision == "fp32"


# ---------------------------------------------------------------------------------- lem doctor


def doctor(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, str]]]:
    proc = run_cli("doctor", "--json", *args, cwd=tmp_path, env=env)
    data = json.loads(proc.stdout)
    assert data["ok"] == (proc.returncode == 0)
    return proc.returncode, data["checks"]


def test_doctor_reports_every_area_with_fix_hints(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("runner: local\npue: 1.2\n")
    code, checks = doctor(tmp_path)
    names = [c["name"] for c in checks]
    for expected in (
        "user settings",
        "carbon and PUE",
        "python",
        "packages",
        "backend pytorch",
        "CPU features",
        "NVML and GPUs",
        "docker",
        "results dir",
        "HF cache",
    ):
        assert expected in names, names
    for check in checks:
        assert check["status"] in {"ok", "warn", "fail"}
        if check["status"] != "ok":
            assert check["fix"], check
    assert code == (1 if any(c["status"] == "fail" for c in checks) else 0)
    assert next(c for c in checks if c["name"] == "python")["status"] == "ok"
    results = next(c for c in checks if c["name"] == "results dir")
    assert results["status"] == "ok" and "(will be created)" in results["detail"]
    carbon = next(c for c in checks if c["name"] == "carbon and PUE")
    assert carbon["status"] == "warn" and "no co2_g" in carbon["detail"]
    if not Path("/dev/nvidiactl").exists():
        gpus = next(c for c in checks if c["name"] == "NVML and GPUs")
        assert gpus["status"] == "warn" and "energy is not measured" in gpus["detail"]


@pytest.mark.parametrize(
    ("flags", "status", "says"),
    [
        ("sse4_2 avx avx2 fma", "warn", "no AVX-512, no AMX"),
        ("avx2 avx512f avx512vl avx512bw avx512dq", "ok", "AVX-512"),
        ("avx2 avx512f amx_tile amx_bf16", "ok", "AMX"),
    ],
)
def test_doctor_lists_the_cpu_features_vllm_cpu_needs_for_fp8(
    tmp_path: Path, flags: str, status: str, says: str
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n")
    _, checks = doctor(tmp_path, env={CPUINFO_ENV: str(cpuinfo)})
    row = next(c for c in checks if c["name"] == "CPU features")
    assert row["status"] == status, row
    assert row["detail"].startswith(f"Test CPU 9000: {says}")
    assert "fp8 KV cache needs x86 with AVX-512" in row["detail"]
    assert ("kv_cache_dtype auto" in row["fix"]) == (status == "warn")


def test_doctor_survives_broken_settings_and_an_unwritable_results_dir(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("gaps: [\n")
    code, checks = doctor(tmp_path)
    assert code == 1
    settings = next(c for c in checks if c["name"] == "user settings")
    assert settings["status"] == "fail" and "YAML syntax error" in settings["detail"]
    assert len(checks) > 5  # the other checks still ran
    (tmp_path / SETTINGS_FILE).write_text("results_dir: /proc/lem-results\n")
    code, checks = doctor(tmp_path)
    assert code == 1
    results = next(c for c in checks if c["name"] == "results dir")
    assert results["status"] == "fail" and "LEM_OUTPUT_DIR" in results["fix"]


def test_doctor_quiet_table_shows_only_what_is_not_ok(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("runner: local\n")
    full = run_cli("doctor", cwd=tmp_path)
    quiet = run_cli("doctor", "-q", cwd=tmp_path)
    assert "python" in full.stdout and "python" not in quiet.stdout
    assert quiet.returncode == full.returncode
    assert "failed," in quiet.stdout


def test_doctor_never_shows_the_token_or_webhook(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("webhooks: {urls: ['https://h.example.com/SECRETX']}\n")
    proc = run_cli("doctor", "-v", cwd=tmp_path, env={"HF_TOKEN": "hf_SECRETY"})
    said = proc.stdout + proc.stderr
    assert "https://h.example.com" in said and "HF_TOKEN set" in said
    assert "SECRETX" not in said and "SECRETY" not in said


# -------------------------------------------------------------------- size limit and --yes


def test_a_campaign_over_max_experiments_needs_yes(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("max_experiments: 5\n")
    (tmp_path / "c.yaml").write_text("name: x\ngrid:\n  batch_size: [1, 2, 3]\n  seed: [1, 2]\n")
    refused = run_cli("campaign", "c.yaml", "--dry-run", cwd=tmp_path)
    assert refused.returncode == 2
    message = one_line(refused.stderr)
    assert "expands to 6 experiments, more than max_experiments (5)" in message
    assert "pass --yes" in message
    confirmed = run_cli("campaign", "c.yaml", "--dry-run", "--json", "--yes", cwd=tmp_path)
    assert confirmed.returncode == 0, confirmed.stderr
    assert len(json.loads(confirmed.stdout)["experiments"]) == 18
    # the environment raises the limit too
    env_raised = run_cli(
        "campaign", "c.yaml", "--dry-run", cwd=tmp_path, env={"LEM_MAX_EXPERIMENTS": "6"}
    )
    assert env_raised.returncode == 0, env_raised.stderr


def test_verbose_dry_run_says_where_each_setting_came_from(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("pue: 1.4\n")
    (tmp_path / "c.yaml").write_text("name: x\n")
    proc = run_cli(
        "campaign",
        "c.yaml",
        "--dry-run",
        "-v",
        "-o",
        "elsewhere",
        cwd=tmp_path,
        env={"LEM_CARBON_INTENSITY_G_PER_KWH": "90"},
    )
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert f"setting pue = 1.4 ({tmp_path / SETTINGS_FILE})" in err
    assert (
        "setting carbon_intensity_g_per_kwh = 90.0 (environment (LEM_CARBON_INTENSITY_G_PER_KWH))"
        in err
    )
    assert "setting results_dir = elsewhere (--output-dir)" in err
    assert "setting max_experiments = 10000 (default)" in err


# ------------------------------------------------------------------ results and resume output


@pytest.fixture
def finished_campaign(tmp_path: Path) -> Path:
    (tmp_path / "c.yaml").write_text("name: out\ncycles: 2\ngrid:\n  batch_size: [1, 2]\n")
    settings = UserSettings().override("test", pue=1.25)
    directory = create_campaign(
        load_campaign(tmp_path / "c.yaml"), tmp_path / "res", settings=settings
    )
    finish_campaign(directory, lambda spec: {})
    store = ManifestStore(directory)
    manifest = store.load()
    manifest.entries[0].status, manifest.entries[0].error = "failed", "BackendError: boom"
    store.save(manifest)
    return directory


def test_results_quiet_verbose_and_json(tmp_path: Path, finished_campaign: Path) -> None:
    normal = run_cli("results", finished_campaign, cwd=tmp_path)
    quiet = run_cli("results", finished_campaign, "-q", cwd=tmp_path)
    verbose = run_cli("results", finished_campaign, "-v", cwd=tmp_path)
    as_json = run_cli("results", finished_campaign, "--json", cwd=tmp_path)
    for proc in (normal, quiet, verbose, as_json):
        assert proc.returncode == 0, proc.stderr
    assert "tokens/s" in normal.stdout
    assert quiet.stdout.strip() == "3 done, 1 failed, 0 pending."
    assert "failed" in verbose.stdout and "BackendError: boom" in verbose.stdout
    assert "setting pue = 1.25 (test)" in verbose.stdout
    data = json.loads(as_json.stdout)
    assert data["counts"]["failed"] == 1
    assert data["settings"]["pue"] == 1.25
    assert data["failed"] == [
        {
            "experiment_id": data["failed"][0]["experiment_id"],
            "cycle": 1,
            "status": "failed",
            "attempts": 1,
            "error": "BackendError: boom",
        }
    ]
    assert {"facility_energy_j", "co2_g"} <= {row["metric"] for row in data["summary"]}


def test_resume_json_output_is_json_alone(tmp_path: Path, finished_campaign: Path) -> None:
    dry = run_cli("resume", finished_campaign, "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["experiments"] == []  # its one failure waits for --retry-failed
    dry = run_cli(
        "resume", finished_campaign, "--dry-run", "--json", "--retry-failed", cwd=tmp_path
    )
    assert dry.returncode == 0, dry.stderr
    assert len(json.loads(dry.stdout)["experiments"]) == 1
    nothing = run_cli("resume", "--json", "-q", "--results-dir", tmp_path / "none", cwd=tmp_path)
    assert nothing.returncode == 0
    assert json.loads(nothing.stdout) == {"campaign_dir": None, "experiments": []}
    assert nothing.stderr == ""


def test_resume_finds_campaigns_under_the_settings_results_dir(
    tmp_path: Path, finished_campaign: Path
) -> None:
    (tmp_path / SETTINGS_FILE).write_text("results_dir: res\n")
    proc = run_cli("resume", "--dry-run", "--json", "--retry-failed", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["experiments"]) == 1


# ----------------------------------------------------------------------------- permissions


def test_no_world_write_masks_world_write_and_restores_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with no_world_write():
            (tmp_path / "f").write_text("x")
            (tmp_path / "d").mkdir()
            inside = os.umask(0)
            os.umask(inside)
        assert os.umask(0) == 0  # restored
    finally:
        os.umask(old)
    assert inside == 0o002
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o775


def lem_piped(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lem ARGS` with stdout a pipe and no COLUMNS: as under nohup, Slurm or `| tee`."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "llenergymeasure.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "NO_COLOR": "1", "TERM": "dumb"},
        timeout=120,
        check=False,
    )


def test_tables_off_a_terminal_keep_every_column_and_name(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: wide\ncycles: 2\nbase: {decoding: {strategy: sampling}}\n"
        "grid:\n  batch_size: [1, 2]\n  max_output_tokens: [8, 16]\n"
        "  decoding.temperature: [0.5, 0.7]\n"
    )
    directory = create_campaign(
        load_campaign(tmp_path / "c.yaml"), tmp_path / "res", settings=UserSettings()
    )
    finish_campaign(directory, lambda spec: {})
    proc = lem_piped("results", directory, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(map(len, lines)) > 80  # not cut at a terminal's default width
    for text in ("J/token adjusted", "p50 latency s", "decoding.temperature", "max_output_tokens"):
        assert any(text in line for line in lines), (text, proc.stdout)
    assert any("95% CI, Student t over the row's runs" in line for line in lines)  # one line
    # rows whole and sorted by the swept values (max_output_tokens, batch_size, temperature)
    rows = [line for line in lines if line.startswith("│ ")]
    cells = [[c.strip() for c in r.split("│")[1:4]] for r in rows[:3]]  # a column each
    assert cells == [["8", "1", "0.5"], ["8", "1", "0.7"], ["8", "2", "0.5"]]


def test_config_list_off_a_terminal_is_one_line_per_parameter(tmp_path: Path) -> None:
    from llenergymeasure.config.describe import parameters

    proc = lem_piped("config", "list", "--backend", "pytorch", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = parameters("pytorch")
    lines = proc.stdout.splitlines()
    assert len(lines) == len(rows) + 5  # title, 3 header rules, header; a row a line
    for row in rows:
        assert sum(row.key in line and row.description[:30] in line for line in lines) >= 1


def test_the_cli_starts_without_loading_heavy_modules() -> None:
    """`lem --help`/`--version` build their options from plain Literals and names: loading
    pydantic, pandas, pyarrow or the docker client there cost seconds (benchmarks/RESULTS.md)."""
    import subprocess
    import sys

    heavy = ("pydantic", "pandas", "pyarrow", "matplotlib", "python_on_whales", "torch")
    code = (
        "import sys, llenergymeasure.cli; "
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
