"""Imported once by the local runner's fork server: the PyTorch engine and the worker's own
modules, so forked workers start with them loaded. Importing torch does not create a CUDA
context; if something here ever does, forking would be unsafe and the check below stops it
(the fork server skips a preload module that fails; workers then import on their own)."""

from __future__ import annotations

import torch

import llenergymeasure.backends.pytorch
import llenergymeasure.worker.__main__
import llenergymeasure.worker.run  # noqa: F401

if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # pragma: no cover
    raise ImportError("CUDA was initialised while preloading: forking workers would be unsafe")
