"""Imported once by the local runner's fork server: the engines whose descriptor says they
may be forked (PyTorch) and the worker's own modules, so forked workers start with them
loaded. Importing torch does not create a CUDA context; if something here ever does (an
engine that initialises CUDA at import), forking would be unsafe: the check below says so on
the campaign's terminal (this process's stderr) and refuses. The container's fork server then
does not start; Python's forkserver ignores the ImportError and keeps forking, so each forked
worker sees the inherited CUDA state and re-executes itself as a fresh interpreter
(worker/forked.py)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from multiprocessing import spawn
from typing import Any

import torch  # noqa: F401  (the point: imported here once, then forked)

import llenergymeasure.worker.__main__
import llenergymeasure.worker.run  # noqa: F401
from llenergymeasure.backends import get_backend
from llenergymeasure.config.descriptor import descriptors
from llenergymeasure.contract import WORKER_NAME
from llenergymeasure.worker.forked import CUDA_IN_SERVER, cuda_initialised

for _name, _found in descriptors().items():
    if _found.forkable:
        get_backend(_name)

_prepare = spawn.prepare


def _prepare_worker(data: Mapping[str, Any]) -> None:
    """multiprocessing re-runs the host's main script in every child before its target; a
    worker needs nothing from it, and a library user's script without an `if __name__ ==
    "__main__":` guard would start a second campaign there, waiting on the first one's lock."""
    if data.get("name") == WORKER_NAME:
        data = {k: v for k, v in data.items() if not k.startswith("init_main_from")}
    _prepare(data)


spawn.prepare = _prepare_worker  # this fork server's children only (it is lem's own)

if cuda_initialised():
    print(
        f"notice: {CUDA_IN_SERVER}: every worker starts as a fresh interpreter instead",
        file=sys.stderr,
        flush=True,
    )
    raise ImportError(f"{CUDA_IN_SERVER}: forking workers would be unsafe")
