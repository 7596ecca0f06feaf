"""`lem doctor`: is this machine ready to measure? One row per check (ok / warn / fail), each
not-ok row with the command or setting that fixes it.

A check never takes the doctor down: one that raises, or hangs (a Docker engine that does not
answer), becomes a failed row saying so. `fail` means a campaign would not run as configured;
`warn` means something works in a reduced way (no GPU: no energy; no image: local runner).
NVML is read in a subprocess and Docker through the docker CLI: the host never loads either.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from llenergymeasure.config.descriptor import descriptors
from llenergymeasure.config.settings import (
    SETTINGS_FILE,
    UserSettings,
    find_settings_file,
    load_settings,
)
from llenergymeasure.cpu_features import FP8_KV_CACHE_NEEDS, read_cpu_features
from llenergymeasure.errors import LemError, printable
from llenergymeasure.version import __version__

Status = Literal["ok", "warn", "fail"]
CHECK_TIMEOUT_S = 60.0
MIN_PYTHON = (3, 10)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


Probe = Callable[[UserSettings | None], list[Check]]


def run_checks() -> list[Check]:
    """Every check, in order; never raises."""
    settings_checks, settings = _settings()
    rows = list(settings_checks)
    for probe in (
        _python,
        _packages,
        _backends,
        _cpu,
        _gpus,
        _docker,
        _results_dir,
        _schedulers,
        _hf_cache,
    ):
        rows += _guarded(probe, settings)
    return rows


def exit_code(checks: list[Check]) -> int:
    """0 unless a check failed (warnings included): 1."""
    return 1 if any(c.status == "fail" for c in checks) else 0


def as_json(checks: list[Check]) -> str:
    return json.dumps({"ok": exit_code(checks) == 0, "checks": [asdict(c) for c in checks]})


def _guarded(probe: Probe, settings: UserSettings | None) -> list[Check]:
    """Run a probe in a daemon thread: an exception or a hang is a failed row, not a crash."""
    name = probe.__name__.strip("_").replace("_", " ")
    box: list[list[Check] | BaseException] = []

    def target() -> None:
        try:
            box.append(probe(settings))
        except Exception as e:  # the doctor must never crash
            box.append(e)

    thread = threading.Thread(target=target, name=f"lem-doctor-{name}", daemon=True)
    thread.start()
    thread.join(CHECK_TIMEOUT_S)
    if not box:
        detail = f"no answer within {CHECK_TIMEOUT_S:g} s"
        return [Check(name, "fail", detail, "something it asks (docker, NVML) hangs: check it")]
    outcome = box[0]
    if isinstance(outcome, LemError):
        return [Check(name, "fail", printable(str(outcome), 600))]
    if isinstance(outcome, BaseException):
        detail = f"the check itself failed: {type(outcome).__name__}: {outcome}"
        return [Check(name, "fail", printable(detail, 300), "please report this as a bug")]
    return outcome


# ------------------------------------------------------------------------------------ checks


def _settings() -> tuple[list[Check], UserSettings | None]:
    path = find_settings_file(Path.cwd())
    try:
        settings = load_settings()
    except LemError as e:
        fix = f"correct {path}" if path else "correct the LEM_* environment variables"
        return [Check("user settings", "fail", printable(str(e), 600), fix)], None
    where = str(path) if path else f"no {SETTINGS_FILE} (defaults)"
    overridden = sorted(k for k, s in settings.sources.items() if s.startswith("environment"))
    if overridden:
        where += f"; from the environment: {', '.join(overridden)}"
    rows = [Check("user settings", "ok", where, "" if path else "`lem init` writes one")]
    carbon, pue = settings.carbon_intensity_g_per_kwh, settings.pue
    if carbon is None or pue is None:
        missing = [n for n, v in (("carbon intensity", carbon), ("PUE", pue)) if v is None]
        rows.append(
            Check(
                "carbon and PUE",
                "warn",
                f"{' and '.join(missing)} not set: results have no "
                + " or ".join(
                    column
                    for column, value in (("co2_g", carbon), ("facility_energy_j", pue))
                    if value is None
                ),
                "set carbon_intensity_g_per_kwh and pue in .lem-config.yaml "
                "(or LEM_CARBON_INTENSITY_G_PER_KWH, LEM_PUE)",
            )
        )
    else:
        rows.append(Check("carbon and PUE", "ok", f"{carbon:g} gCO2/kWh, PUE {pue:g}"))
    if settings.webhooks is not None:
        hosts = ", ".join(settings.webhooks.hosts())
        rows.append(Check("webhooks", "ok", f"{len(settings.webhooks.urls)} configured ({hosts})"))
    return rows, settings


def _python(_settings: UserSettings | None) -> list[Check]:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return [Check("python", "fail", f"{version} ({sys.executable})", f"use Python {need}+")]
    return [Check("python", "ok", f"{version} ({sys.executable})")]


def _packages(_settings: UserSettings | None) -> list[Check]:
    """llenergymeasure's own dependencies, as its metadata lists them."""
    missing = []
    for requirement in importlib.metadata.requires("llenergymeasure") or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    detail = f"llenergymeasure {__version__}"
    if missing:
        fix = "reinstall: pip install -e . (or `make setup`)"
        return [Check("packages", "fail", f"{detail}; missing: {', '.join(missing)}", fix)]
    return [Check("packages", "ok", f"{detail}; every dependency installed")]


def _backends(_settings: UserSettings | None) -> list[Check]:
    """Each registered backend (its descriptor): is its engine importable here, which version."""
    rows = []
    for backend, found in descriptors().items():
        if importlib.util.find_spec(found.import_check) is None:
            where = "its Docker image can still run it" if found.service else "it has no image"
            detail = f"not installed here ({where})"
            rows.append(Check(f"backend {backend}", "warn", detail, found.install))
            continue
        versions = []
        for dist in found.distributions:
            try:
                versions.append(f"{dist} {importlib.metadata.version(dist)}")
            except importlib.metadata.PackageNotFoundError:
                continue
        rows.append(Check(f"backend {backend}", "ok", ", ".join(versions) or "installed"))
    return rows


def _cpu(_settings: UserSettings | None) -> list[Check]:
    """What vLLM's CPU build can run here: its fp8 KV cache needs AVX-512 or AMX."""
    features = read_cpu_features()
    detail = f"{features.describe()}; vLLM-CPU fp8 KV cache needs {FP8_KV_CACHE_NEEDS}"
    if features.fp8_kv_cache:
        return [Check("CPU features", "ok", detail + ": present")]
    fix = "on this CPU use vllm.kv_cache_dtype auto (fp8 experiments fail here), or a GPU"
    return [Check("CPU features", "warn", detail + ": missing", fix)]


def _gpus(_settings: UserSettings | None) -> list[Check]:
    cmd = [sys.executable, "-m", "llenergymeasure.measure.gpus"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        tail = printable((proc.stderr or proc.stdout).strip()[-300:])
        return [Check("NVML and GPUs", "fail", f"the NVML probe failed: {tail}", "reinstall")]
    if "error" in data:
        return [
            Check(
                "NVML and GPUs",
                "warn",
                f"no NVIDIA GPU usable ({printable(str(data['error']), 200)}): energy is not "
                "measured (results say so)",
                "install the NVIDIA driver on a GPU machine; on a CPU this is expected",
            )
        ]
    gpus = data["gpus"]
    if not gpus:
        return [Check("NVML and GPUs", "warn", "NVML works but sees no GPU", "check the driver")]
    rows = [Check("NVML and GPUs", "ok", f"driver {data['driver_version']}, {len(gpus)} GPU(s)")]
    for gpu in gpus:
        name = f"GPU {gpu['index']}"
        memory = f", {gpu['memory_total_mb'] / 1024:.0f} GiB" if gpu["memory_total_mb"] else ""
        detail = f"{printable(str(gpu['name']))}{memory}"
        if gpu["mig_enabled"]:
            fix = "measure on a GPU with MIG off (NVML reports the whole GPU's power)"
            rows.append(Check(name, "warn", detail + "; MIG enabled", fix))
        elif gpu["persistence_mode"] is False:
            fix = "sudo nvidia-smi -pm 1 (the tool never changes the card itself)"
            rows.append(Check(name, "warn", detail + "; persistence mode off", fix))
        else:
            rows.append(Check(name, "ok", detail))
    return rows


def _docker(settings: UserSettings | None) -> list[Check]:
    from llenergymeasure.errors import PreflightError
    from llenergymeasure.orchestrator.runners.docker import DockerEngine
    from llenergymeasure.results.schema import schema_fingerprint

    wanted = settings.runner if settings is not None else None
    levels: dict[str | None, Status] = {
        "docker": "fail",
        "docker-persistent": "fail",
        "local": "ok",
    }
    needed = levels.get(wanted, "warn")
    try:
        engine = DockerEngine.connect()
    except PreflightError as e:
        detail, _, fix = str(e).partition("; ")
        why = f" (runner {wanted} is asked for)" if needed == "fail" else ""
        detail = f"{detail}{why}; the local runner still works"
        return [Check("docker", needed, printable(detail, 400), printable(fix, 300))]
    version = engine.client.compose.version().strip()
    rows = [Check("docker", "ok", f"engine answers; {printable(version, 100)}")]
    for backend, found in descriptors().items():
        if found.service is None:
            detail = "no image (its descriptor names no compose service): runner local only"
            rows.append(Check(f"image {backend}", "ok", detail))
            continue
        image = engine.image(backend)
        name = f"image {backend}"
        if image is None:
            ref = engine.image_ref(backend)
            unused = " (not needed: runner local)" if needed == "ok" else ""
            detail = f"{ref} not built{unused}"
            rows.append(Check(name, needed, detail, engine.build_hint(backend)))
        elif image.fingerprint != schema_fingerprint():
            detail = (
                f"{image.ref} was built from another version (schema fingerprint "
                f"{image.fingerprint or 'missing'}, this host has {schema_fingerprint()})"
            )
            rows.append(Check(name, needed, detail, "rebuild: " + engine.build_hint(backend)))
        else:
            detail = f"{image.ref} ({image.id[:19]}), schema fingerprint {image.fingerprint}"
            rows.append(Check(name, "ok", detail))
    return rows


def _results_dir(settings: UserSettings | None) -> list[Check]:
    root = Path(settings.results_dir if settings is not None else "results")
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = (
        "fix its permissions, or pick another: -o DIR, LEM_OUTPUT_DIR or results_dir in "
        + SETTINGS_FILE
    )
    if not existing.is_dir():
        return [Check("results dir", "fail", f"{root}: {existing} is not a directory", fix)]
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".lem-doctor-"):
            pass
    except OSError as e:
        detail = f"{root}: cannot write in {existing} ({printable(str(e.strerror or e))})"
        return [Check("results dir", "fail", detail, fix)]
    where = f"{root.resolve()}" + ("" if existing == root else " (will be created)")
    return [Check("results dir", "ok", f"{where}, writable")]


def _schedulers(settings: UserSettings | None) -> list[Check]:
    """Each batch runner's scheduler: its client tools, and what its runs need."""
    from llenergymeasure.orchestrator.runners.select import QUEUES

    return [Check(name, *make().doctor(settings)) for name, make in QUEUES.items()]


def _hf_cache(_settings: UserSettings | None) -> list[Check]:
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    has_token = bool(os.environ.get("HF_TOKEN"))
    detail = f"{home}{'' if home.exists() else ' (will be created)'}; HF_TOKEN "
    detail += "set" if has_token else "not set"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        detail += "; offline (HF_HUB_OFFLINE=1)"
    if home.exists() and not os.access(home, os.W_OK | os.X_OK):
        fix = "fix its permissions or set HF_HOME to a writable directory"
        return [Check("HF cache", "fail", f"{detail}; not writable", fix)]
    hint = "" if has_token else "gated models need HF_TOKEN in the environment (never recorded)"
    return [Check("HF cache", "ok", detail, hint)]
