"""The engine of toy_backend.CUDA_AT_IMPORT: the toy engine, in a module that initialises CUDA
when imported, as an engine may. With no GPU here that is torch's own record of it
(torch.cuda._initialized, which its CUDA start-up sets and a fork inherits): the one injected
part of test_fork_server.py's fallback test."""

from __future__ import annotations

import torch
from toy_engine import ToyEngine

torch.cuda._initialized = True


class CudaAtImportEngine(ToyEngine):
    name = "cuda_at_import"
