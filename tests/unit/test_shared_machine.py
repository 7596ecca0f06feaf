"""Issue 27, red-team: what another user of a shared machine can plant (lock-folder links, a
settings file), secrets a record must not hold, and values and files that used to pass
validation and break later. Files "of another user" are planted as root and handed to `nobody`
(os.lchown): the kernel then treats them exactly as nobody's; skipped when not root."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_errors import run_cli

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config import load_campaign
from llenergymeasure.config import loader as yaml_loader
from llenergymeasure.config.settings import UserSettings, load_settings
from llenergymeasure.errors import ConfigError, DispatchError
from llenergymeasure.orchestrator.gpu_locks import DeviceLocks
from llenergymeasure.redact import REDACTED
from llenergymeasure.results.collate import write_tables

WriteYaml = Callable[..., Path]
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")


def planted(path: Path, *, link_to: Path | None = None, text: str = "", mode: int = 0o644) -> Path:
    """A file or link at path that belongs to `nobody`."""
    if link_to is not None:
        path.symlink_to(link_to)
    else:
        path.write_text(text)
        path.chmod(mode)
    os.lchown(path, NOBODY, NOBODY)
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


# ------------------------------------------------------------------------ 27.1 lock folder


@as_root
def test_a_world_writable_lock_folder_of_another_user_is_refused(
    tmp_path: Path, victim: Path
) -> None:
    folder = tmp_path / "locks"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # not sticky: anyone could swap the lock files
    os.chown(folder, NOBODY, NOBODY)
    planted(folder / "cpu.json", link_to=victim)
    with pytest.raises(DispatchError, match="writable by others without the sticky bit"):
        DeviceLocks(["cpu"], "c", notice=print, directory=folder).__enter__()
    assert victim.read_text() == "precious\n"


@as_root
@pytest.mark.parametrize("link", ["cpu.json", "cpu.lock"])
def test_links_planted_in_a_sticky_lock_folder_are_never_written_through(
    tmp_path: Path, victim: Path, link: str
) -> None:
    folder = tmp_path / "locks"
    folder.mkdir()
    folder.chmod(0o1777)
    os.chown(folder, NOBODY, NOBODY)
    planted(folder / link, link_to=victim)
    notices: list[str] = []
    if link == "cpu.lock":  # O_NOFOLLOW: refused, the target untouched
        with pytest.raises(DispatchError, match="cannot lock the CPU"):
            DeviceLocks(["cpu"], "c", notice=notices.append, directory=folder).__enter__()
    else:  # the holder note is renamed over the link, which goes; the target stays
        with DeviceLocks(["cpu"], "c", notice=notices.append, directory=folder):
            assert stat.S_ISREG((folder / "cpu.json").lstat().st_mode)
    assert victim.read_text() == "precious\n"


@as_root
def test_another_users_campaign_sees_the_lock_and_takes_it_once_free() -> None:
    """The shared folder stays shared: `nobody` (setpriv) is refused while root holds the
    CPU, and takes it once it is free, through root's lock file."""
    shared = Path(tempfile.mkdtemp(dir="/tmp", prefix="lem-locks-test-"))
    try:
        shared.chmod(0o755)
        folder = shared / "locks"
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parents[2] / 'src')!r})\n"
            "from pathlib import Path\n"
            "from llenergymeasure.orchestrator.gpu_locks import DeviceLocks\n"
            f"with DeviceLocks(['cpu'], 'intruder', wait=False, notice=print, "
            f"directory=Path({str(folder)!r})): print('got it')\n"
        )

        def intrude() -> subprocess.CompletedProcess[str]:
            command = [*as_nobody, sys.executable, "-c", code]
            return subprocess.run(
                command, cwd="/", capture_output=True, text=True, timeout=120, check=False
            )

        with DeviceLocks(["cpu"], "holder", notice=print, directory=folder):
            refused = intrude()
        assert refused.returncode != 0 and "in use by campaign holder" in refused.stderr
        freed = intrude()
        assert freed.returncode == 0 and "got it" in freed.stdout, freed.stderr
    finally:
        shutil.rmtree(shared)


def test_a_lock_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "locks").symlink_to(tmp_path / "real")
    with pytest.raises(DispatchError, match="not a directory"):
        DeviceLocks(["cpu"], "c", notice=print, directory=tmp_path / "locks").__enter__()


# ---------------------------------------------------------------------- 27.2 settings files


@as_root
@pytest.mark.parametrize("how", ["owned by uid 65534", "writable by every user"])
def test_a_planted_settings_file_is_refused_naming_it(tmp_path: Path, how: str) -> None:
    text = "results_dir: /tmp/stolen\n"
    settings = tmp_path / ".lem-config.yaml"
    if how.startswith("owned"):
        planted(settings, text=text)
    else:
        settings.write_text(text)
        settings.chmod(0o666)
    work = tmp_path / "project"
    work.mkdir()
    with pytest.raises(ConfigError, match=f"settings file {settings} is {how}: refused"):
        load_settings(work, env={})
    (work / "c.yaml").write_text("name: c\n")
    proc = run_cli("campaign", "c.yaml", "--dry-run", cwd=work)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(settings) in proc.stderr and "Traceback" not in proc.stderr


def test_the_settings_file_in_use_is_always_named(tmp_path: Path) -> None:
    (tmp_path / ".lem-config.yaml").write_text("max_experiments: 5\n")
    (tmp_path / "c.yaml").write_text("name: c\n")
    proc = run_cli("campaign", "c.yaml", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"notice: settings from {tmp_path / '.lem-config.yaml'}" in proc.stderr


# ------------------------------------------------------------------------- 27.3 secrets


def test_slurm_secrets_are_redacted_in_the_record_and_restored_for_the_job() -> None:
    slurm = {
        "environment": {"HF_TOKEN": "hf_abc", "db_password": "pw", "OMP_NUM_THREADS": "4"},
        "extra_sbatch": ["--comment=sekrit", "--mail-user=me@x"],
    }
    settings = UserSettings.model_validate({"slurm": slurm})
    record = settings.record()
    assert record.slurm is not None
    assert record.slurm.environment == {
        "HF_TOKEN": REDACTED,
        "db_password": REDACTED,
        "OMP_NUM_THREADS": "4",
    }
    assert record.slurm.extra_sbatch == [f"--comment={REDACTED}", f"--mail-user={REDACTED}"]
    assert "hf_abc" not in record.model_dump_json()
    # resume: the job gets the secrets as the settings hold them now, never the placeholder
    assert UserSettings().restored(record).slurm.environment == {"OMP_NUM_THREADS": "4"}
    assert settings.restored(record).slurm == settings.slurm


@pytest.mark.parametrize("name", [".lem-config.yaml", "campaign.yaml"])
def test_a_bad_slurm_value_is_explained_without_showing_it(
    write_yaml: WriteYaml, tmp_path: Path, name: str
) -> None:
    path = write_yaml("name: c\nslurm:\n  environment: {HF_TOKEN: 31337}\n", name)
    with pytest.raises(ConfigError, match="HF_TOKEN: Input should be a valid string") as raised:
        load_settings(tmp_path, env={}) if name.startswith(".") else load_campaign(path)
    assert "31337" not in str(raised.value)


# ----------------------------------------------------------------------- 27.5 bounded values


@pytest.mark.parametrize(
    ("decoding", "expected"),
    [
        ("repetition_penalty: .inf", "finite number"),
        ("repetition_penalty: .nan", "finite number"),
        ("top_k: 100000000000000000000", "less than or equal to 1000000"),
        ("min_output_tokens: 100000000000000000000", "less than or equal to 1000000"),
    ],
)
def test_values_that_would_break_a_resume_or_collation_are_refused(
    write_yaml: WriteYaml, decoding: str, expected: str
) -> None:
    path = write_yaml(
        f"name: c\nbase:\n  decoding:\n    strategy: sampling\n    ignore_eos: false\n"
        f"    {decoding}\n"
    )
    with pytest.raises(ConfigError, match=expected):
        load_campaign(path)


# -------------------------------------------------------------------------- 27.6 prompts


@pytest.mark.parametrize("kind", ["device", "fifo", "huge", "directory"])
def test_prompt_files_must_be_regular_and_capped_at_expansion(
    write_yaml: WriteYaml, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "prompts.jsonl"
    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:  # sparse: no disk used
        with path.open("wb") as f:
            f.truncate(yaml_loader.MAX_PROMPT_FILE_BYTES + 1)
    campaign = write_yaml(f"name: c\nbase:\n  prompts: {{source: jsonl, path: '{path}'}}\n")
    expected = {"huge": "bytes; a JSONL file here is at most", "directory": "is a directory"}
    with pytest.raises(ConfigError, match=expected.get(kind, "is not a regular file")):
        load_campaign(campaign)  # what `--dry-run` does: expansion, no prompt read


# -------------------------------------------------------------------------- 27.7 big YAML


def test_a_huge_yaml_is_counted_by_libyaml_and_refused_before_it_is_composed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's file: 4.0 MB, 2.09 M scalars (98 s and 2.8 GB before; about 3 s here)."""
    assert yaml_loader.SAFE_LOADER is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    path = tmp_path / "big.yaml"
    path.write_text("name: big\ngrid:\n  seed: [" + ",".join(["1"] * 2_090_000) + "]\n")
    assert path.stat().st_size <= yaml_loader.MAX_FILE_BYTES

    def never(*_args: object) -> None:
        raise AssertionError("composed a file the value cap refuses")

    monkeypatch.setattr(yaml_loader.SAFE_LOADER, "get_single_node", never)
    with pytest.raises(ConfigError, match="more than 1,000,000 values"):
        yaml_loader.read_yaml(path)


# --------------------------------------------------------------- 27.8 tables, 27.10 modes


@as_root
def test_a_table_write_that_fills_the_disk_leaves_no_temp_file(tmp_path: Path) -> None:
    """A real full disk: a 64 KB tmpfs, as in the issue."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        frame = pd.DataFrame({"text": ["x" * 1000] * 200})
        with pytest.raises(OSError) as raised:
            write_tables(frame, disk, "results")
        assert raised.value.errno == errno.ENOSPC
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    """exp.json, result.json, manifest.json and .lem-config.yaml are written by
    write_text_atomic; `lem init` under umask 077 leaves nothing others can read."""
    old = os.umask(0o077)
    try:
        write_text_atomic(tmp_path / "result.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == 0o600
    init = [sys.executable, "-m", "llenergymeasure.cli", "init", "t", "--non-interactive"]
    proc = subprocess.run(
        ["sh", "-c", 'umask 077 && exec "$@"', "sh", *init],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "t").iterdir()}
    assert modes == {"campaign.yaml": 0o600, ".lem-config.yaml": 0o600}
