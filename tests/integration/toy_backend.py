"""A backend added from outside the package, through its descriptor alone: what
test_backend_plugin.py registers with LEM_BACKENDS=toy_backend:TOY. Its engine (toy_engine.py)
is a real, small computation on the CPU, so a campaign measures real work."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

from llenergymeasure.config.capabilities import Capabilities
from llenergymeasure.config.descriptor import BackendDescriptor, BackendSettings


class ToySettings(BackendSettings):
    """Settings of the toy engine."""

    width: int = Field(16, ge=1, le=4096, description="Width of the toy model's state.")


TOY = BackendDescriptor(
    name="toy",
    settings=ToySettings,
    capabilities=Capabilities(precision=("fp32",), quantization=(None,)),
    engine="toy_engine:ToyEngine",
    extra="toy",
    import_check="numpy",
    distributions=("numpy",),
    service=None,
    label="Toy",
)

CUDA_AT_IMPORT = replace(
    TOY, name="cuda_at_import", engine="cuda_at_import_engine:CudaAtImportEngine", forkable=True
)
"""The toy engine from a module that initialises CUDA at import, marked forkable: the local
runner's fork server preloads it and so holds CUDA state (test_fork_server.py)."""


STANDIN = replace(TOY, name="standin", server="standin_server:StandInServer")
"""A backend only for `mode: server` against the stand-in (the plugin hook registers it)."""
