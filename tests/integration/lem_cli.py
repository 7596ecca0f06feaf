"""Helpers for integration tests: the real `lem` CLI in a subprocess, real `lem-worker`s.

Nothing here fakes or patches the code under test; these helpers only start processes, read
the files they leave behind and look at /proc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry, ManifestStore

CLI_TIMEOUT_S = 300
NO_GAPS_SETTINGS = "gaps:\n  between_experiments_s: 0\n  between_cycles_s: 0\n"
HANG_IN_GENERATE = {"LEM_CRASHPOINT": "worker.generate:1:hang"}
"""A worker's environment in which it hangs in its first generate (llenergymeasure/faults.py):
a run that a short --timeout is sure to kill, however fast the worker starts (a forked one
with the engine preloaded finishes the tiny model inside 0.5 s)."""


SEEDS_1_2 = "grid:\n  seed: [1, 2]\n"


def tiny_base(**base: object) -> str:
    """A campaign file's `base:` on the built-in tiny model, quick on a CPU: 2 prompts,
    4 output tokens, no warm-up; keyword arguments change or add keys (YAML values)."""
    settings: dict[str, object] = {
        "model": "builtin:tiny-llama",
        "n_prompts": 2,
        "max_output_tokens": 4,
        "warmup": "{runs: 0}",
    }
    return "base:\n" + "".join(f"  {k}: {v}\n" for k, v in (settings | base).items())


def tiny_campaign(name: str, *, cycles: int = 1, tail: str = "", **base: object) -> str:
    """A whole campaign file on the tiny model (see tiny_base); tail: more top-level YAML."""
    return f"name: {name}\ncycles: {cycles}\n" + tiny_base(**base) + tail


def backends_env(*targets: str) -> dict[str, str]:
    """Extra environment that registers backends defined in this folder (LEM_BACKENDS targets,
    `module:ATTRIBUTE`) in `lem` and the workers it starts."""
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    return {"LEM_BACKENDS": ",".join(targets), "PYTHONPATH": path}


def lem_env() -> dict[str, str]:
    """The environment the CLI runs in: offline, and wide enough that rich does not wrap
    paths in the messages the tests read."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}


def lem_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "llenergymeasure.cli", *map(str, args)]


def run_lem(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `lem ARGS` to completion (env: extra variables); output is captured as text."""
    return subprocess.run(
        lem_cmd(*args),
        cwd=cwd,
        env=lem_env() | (env or {}),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    """Assertion message: everything the command said."""
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def only_campaign_dir(root: Path) -> Path:
    """The single campaign directory a run created under root."""
    dirs = [p for p in root.iterdir() if (p / "manifest.json").is_file()]
    assert len(dirs) == 1, f"expected one campaign under {root}, found {dirs}"
    return dirs[0]


def load_manifest(campaign_dir: Path) -> Manifest:
    """The campaign's state as `lem` sees it: the snapshot with its journal replayed."""
    return ManifestStore(campaign_dir).load()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def processes_mentioning(text: str | Path) -> list[int]:
    """Pids of live processes (other than this one) whose command line or stdout (a worker's
    log: how a worker forked from the fork server, whose command line is the server's, is
    found) contains text.

    Zombies have an empty cmdline, so a killed but unreaped process does not count."""
    needle = str(text).encode()
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        try:
            stdout = bytes((proc_dir / "fd" / "1").readlink()) if cmdline else b""
        except OSError:
            stdout = b""
        if needle in cmdline or needle in stdout:
            pids.append(int(proc_dir.name))
    return pids


def workers_under(path: str | Path) -> list[int]:
    """Pids of live workers running an exp.json under path: `llenergymeasure.worker`
    processes, or processes forked from the fork server that log there."""
    markers = (b"llenergymeasure.worker", b"multiprocessing.forkserver")
    return [
        pid
        for pid in processes_mentioning(path)
        if any(marker in _cmdline(pid) for marker in markers)
    ]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def wait_until_no_process_mentions(text: str | Path, within_s: float = 10.0) -> list[int]:
    """Poll until no process mentions text; returns what is still alive at the deadline."""
    deadline = time.monotonic() + within_s
    while True:
        alive = processes_mentioning(text)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def entry_files(campaign_dir: Path, entry: ManifestEntry) -> dict[str, tuple[int, bytes]]:
    """Each file of entry's experiment directory: mtime and content."""
    exp_dir = campaign_dir / Path(entry.exp_path).parent
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(exp_dir.iterdir())}


def wait_for_running_worker(
    orchestrator: subprocess.Popen[bytes], out_root: Path, within_s: float = 180.0
) -> tuple[Path, Manifest, ManifestEntry, int]:
    """Poll until one entry is done and the next one's worker process is alive."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert orchestrator.poll() is None, "the campaign ended before it could be killed"
        for manifest_path in out_root.glob("*/manifest.json"):
            try:  # read while the campaign writes: a torn journal line must not matter
                manifest = ManifestStore(manifest_path.parent).load()
            except ConfigError:
                continue
            done = [e for e in manifest.entries if e.status == "done"]
            running = [e for e in manifest.entries if e.status == "running"]
            if done and running:
                exp_path = manifest_path.parent / running[0].exp_path
                workers = workers_under(exp_path.parent)  # a forked one logs there
                if workers:
                    return manifest_path.parent, manifest, running[0], workers[0]
        time.sleep(0.05)
    raise AssertionError("never saw a done entry and a running worker at the same time")
