"""Layers point one way (ARCHITECTURE.md, issue 13.4), read from the source itself: every
import statement, at module level or inside a function, of every module under src/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "llenergymeasure"
WORKER_SIDE = ("worker", "backends", "measure", "datasets")
"""Subpackages that run inside the worker process; everything else is the host's."""
ENGINES = ("torch", "transformers", "vllm", "tensorrt_llm", "pynvml")
HOST_MAY_IMPORT = {
    "llenergymeasure.datasets.select": "pre-flight: is a prompt file there, which one it is",
}
"""Worker-side modules the host may name; test_host_imports_load_no_engine checks that they
(and everything else the host imports) load no engine."""
ENGINE_ON_PURPOSE = {"faults.py": "the injected 'oom' fault raises torch's own error"}
FORK_TARGET = {"contract.py": "llenergymeasure.worker.forked"}
"""contract.fork_target imports the worker in the forked child only, never in the host."""


def _imports(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in this file names (relative ones
    resolved), with the package prefixes they import on the way."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _modules(where: str | None = None) -> list[Path]:
    root = PACKAGE / where if where else PACKAGE
    return sorted(root.rglob("*.py"))


def _side(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    return "worker" if first in WORKER_SIDE else "host"


def _names(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        n for n in _imports(path) if any(n == p or n.startswith(f"{p}.") for p in prefixes)
    )


@pytest.mark.parametrize("path", _modules("backends"), ids=lambda p: p.name)
def test_backends_never_import_measurement(path: Path) -> None:
    """Engines know no measurement: the worker brackets them, measure maps their devices."""
    assert _names(path, ("llenergymeasure.measure",)) == []


@pytest.mark.parametrize("path", _modules("measure"), ids=lambda p: p.name)
def test_measurement_never_imports_a_backend(path: Path) -> None:
    assert _names(path, ("llenergymeasure.backends",)) == []


@pytest.mark.parametrize("path", _modules("results"), ids=lambda p: p.name)
def test_results_never_import_the_orchestrator_or_a_face(path: Path) -> None:
    """Results read campaigns through small Protocols (results/views.py)."""
    faces = ("orchestrator", "conductor", "api", "cli")
    assert _names(path, tuple(f"llenergymeasure.{f}" for f in faces)) == []


def test_one_module_builds_an_experiment_result() -> None:
    """Issue 29.1: each mode is a scenario that measures; worker/run.py alone builds the
    ExperimentResult (the offline and the server one, a partial one included)."""
    builders = [
        path.relative_to(PACKAGE).as_posix()
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "ExperimentResult"
    ]
    assert builders == ["worker/run.py"]


def _faces() -> list[Path]:
    cli = PACKAGE / "cli.py"
    return [PACKAGE / "api.py", *([cli] if cli.is_file() else _modules("cli"))]


@pytest.mark.parametrize("path", _faces(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_faces_reach_the_host_only_through_the_conductor(path: Path) -> None:
    """The CLI and the library API name no orchestrator module (no allow-list): resume
    selection, dry runs, status and repair come through conductor.py, for both alike."""
    assert _names(path, ("llenergymeasure.orchestrator",)) == []


@pytest.mark.parametrize("path", _modules("orchestrator"), ids=lambda p: p.name)
def test_the_orchestrator_never_imports_the_worker(path: Path) -> None:
    """Runners name the worker's launch environment and fork target through contract.py (no
    allow-list): only files and those names cross the boundary."""
    assert _names(path, ("llenergymeasure.worker",)) == []


def test_stats_is_a_leaf() -> None:
    """llenergymeasure.stats imports nothing of the project: library users, results and the
    benchmarks share it without pulling in anything else."""
    assert _names(PACKAGE / "stats.py", ("llenergymeasure",)) == []
    assert _names(PACKAGE / "stats.py", ("scipy.special",))  # the walker sees its imports


def test_worker_boundary_file_names_are_written_once() -> None:
    """exp.json, result.json, error.json, timeseries.parquet and worker.log are spelled only in
    contract.py; every other module names them through it."""
    names = {"exp.json", "result.json", "error.json", "timeseries.parquet", "worker.log"}
    spelled = sorted(
        f"{p.relative_to(PACKAGE)}: {node.value}"
        for p in _modules()
        if p.name != "contract.py"
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in names
    )
    assert spelled == []


@pytest.mark.parametrize(
    "path", [p for p in _modules() if _side(p) == "host"], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_host_modules_never_import_an_engine_or_nvml(path: Path) -> None:
    """Only files cross the worker boundary: the host never loads torch, vLLM, TensorRT-LLM or
    NVML, nor the worker-side packages that do."""
    worker = tuple(f"llenergymeasure.{p}" for p in WORKER_SIDE)
    allowed = set(HOST_MAY_IMPORT)
    if str(path.relative_to(PACKAGE)) in ENGINE_ON_PURPOSE:
        allowed |= {"torch"}
    allowed |= {FORK_TARGET.get(str(path.relative_to(PACKAGE)), "-")}
    found = _names(path, ENGINES + worker)
    assert [n for n in found if not any(n == a or n.startswith(f"{a}.") for a in allowed)] == []


def test_host_imports_load_no_engine() -> None:
    """Importing every host module (and so whatever it imports in turn) in a fresh interpreter
    leaves torch, transformers, vLLM, TensorRT-LLM and NVML unloaded, and the environment as
    it was (a library user's own process: the worker's settings stay in the worker)."""
    hosts = [
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in _modules()
        if _side(p) == "host" and p.name != "__main__.py"
    ]
    code = (
        "import importlib, os, sys\n"
        "before = dict(os.environ)\n"
        f"for m in {hosts!r}: importlib.import_module(m)\n"
        f"print(' '.join(e for e in {ENGINES!r} if e in sys.modules))\n"
        "print(' '.join(k for k in {*before, *os.environ} if before.get(k) != os.environ.get(k)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    engines, changed = out.stdout.split("\n")[:2]
    assert (engines, changed) == ("", "")


def test_the_rules_see_imports() -> None:
    """The walker finds what it must: the worker imports a backend and measure, a backend an
    engine (so an empty list above means no such import, not a blind reader)."""
    run = PACKAGE / "worker" / "offline.py"
    assert _names(run, ("llenergymeasure.backends", "llenergymeasure.measure"))
    assert _names(PACKAGE / "backends" / "pytorch.py", ENGINES)
