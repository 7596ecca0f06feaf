"""Imported once by the local runner's fork server: the engines whose descriptor says they
may be forked (PyTorch) and the worker's own modules, so forked workers start with them
loaded. Importing torch does not create a CUDA context; if something here ever does, forking
would be unsafe and the check below stops it (the fork server skips a preload module that
fails; workers then import on their own)."""

from __future__ import annotations

import warnings

import torch

import llenergymeasure.worker.__main__
import llenergymeasure.worker.run  # noqa: F401
from llenergymeasure.backends import get_backend
from llenergymeasure.config.descriptor import descriptors

for _name, _found in descriptors().items():
    if _found.forkable:
        get_backend(_name)

# Every forked child re-runs the host's main module first (multiprocessing's preparation);
# under `python -m llenergymeasure.cli` runpy then warns, once per run on the campaign's
# terminal, that the module is already imported, which here is the point of preloading it.
warnings.filterwarnings(
    "ignore", message=r"'llenergymeasure\.cli' found in sys\.modules", category=RuntimeWarning
)

if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # pragma: no cover
    raise ImportError("CUDA was initialised while preloading: forking workers would be unsafe")
