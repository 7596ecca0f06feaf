"""Docker tests: a real engine, the pytorch image built from the real Dockerfile, real tiny-model
inference inside containers. Skipped, with the reason, when no engine answers
(scripts/provision-docker.sh makes one; .ci/run runs it first).

No registry is reachable here, so the image's base is built locally (debootstrap + docker
import, kept between runs) and pip in the build installs from a wheelhouse that the host's pip
fills (its network and CA settings work; a build container's may not), served over HTTP.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import signal
import sys
from pathlib import Path

import pytest
from docker_helpers import BASE_IMAGE, IMAGE, REPO, WHEELHOUSE, build_pytorch, check
from python_on_whales import DockerClient
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException

from llenergymeasure.config.descriptor import cpu_extra


@pytest.fixture(scope="session", autouse=True)
def _interruptible_children() -> None:
    """The Ctrl+C tests send SIGINT to lem. A shell that starts pytest in the background
    without job control makes SIGINT ignored, and children inherit that; a handler is not
    inherited, so lem then starts with SIGINT's default, as from a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_gaps_on_a_cpu(tmp_path: Path) -> None:
    """The CLI runs in tmp_path; its user settings drop the cool-down gaps between
    experiments, which only matter for a GPU's temperature."""
    (tmp_path / ".lem-config.yaml").write_text(
        "gaps: {between_experiments_s: 0, between_cycles_s: 0}\n", encoding="utf-8"
    )


@pytest.fixture(scope="session")
def docker() -> DockerClient:
    client = DockerClient()
    try:
        client.system.info()
        client.compose.version()
    except (ClientNotFoundError, DockerException) as e:
        reason = e.stderr if isinstance(e, DockerException) and e.stderr else str(e)
        pytest.skip(
            f"no Docker engine with Compose v2 answers ({reason.strip().splitlines()[-1]}); "
            "scripts/provision-docker.sh sets one up"
        )
    return client


@pytest.fixture(scope="session")
def base_image(docker: DockerClient) -> str:
    """A minimal Debian with python3, built once per machine (about a minute) by the script
    users run for `make images-local`: the tests build on what users build on."""
    if docker.image.exists(BASE_IMAGE):
        return BASE_IMAGE
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (scripts/provision-docker.sh installs it)")
    check(str(REPO / "scripts" / "build-base-image.sh"), BASE_IMAGE)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def pytorch_image(docker: DockerClient, base_image: str) -> str:
    """The real images/Dockerfile (pytorch service) through `docker compose build`, on the
    local base, with the host's CPU torch; rebuilt every session (cached layers make that quick)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    check(
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--dest", str(WHEELHOUSE), f"torch=={importlib.metadata.version('torch')}",
        f"{REPO}[{cpu_extra('pytorch')}]", "hatchling",
    )  # fmt: skip
    build = build_pytorch()
    if build.returncode != 0:
        pytest.fail(f"building {IMAGE} failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}")
    return IMAGE
