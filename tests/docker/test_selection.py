"""Runner choice and pre-flight against a real engine: auto picks docker only when the image is
there, cold_start overrides docker-persistent, and a missing or stale image or a file no
container can see is refused before anything is created, with the command that fixes it."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_helpers import REPO, image_env, run_lem
from lem_cli import explain, load_manifest, only_campaign_dir, write
from python_on_whales import DockerClient

from llenergymeasure.orchestrator.runners.docker import FINGERPRINT_LABEL
from llenergymeasure.results.schema import schema_fingerprint

pytestmark = pytest.mark.docker

ONE = """\
name: one
cycles: 1
base:
  model: builtin:tiny-llama
  n_prompts: 1
  max_output_tokens: 2
  warmup: {runs: 0}
"""
STALE = "llenergymeasure-pytorch:cpu-test-stale"


@pytest.fixture
def stale_image(docker: DockerClient, pytorch_image: str, tmp_path: Path) -> Iterator[str]:
    """The test image relabelled as if built from another version of the schema."""
    compose = write(
        tmp_path / "stale" / "compose.yaml",
        f"services:\n  stale:\n    image: {STALE}\n    build:\n      context: .\n"
        f"      dockerfile_inline: 'FROM {pytorch_image}'\n"
        f"      labels: {{{FINGERPRINT_LABEL}: '{'0' * 16}'}}\n",
    )
    DockerClient(compose_files=[compose]).compose.build(quiet=True)
    yield STALE
    docker.image.remove(STALE, force=True)


def test_auto_runs_in_docker_when_the_image_is_there(pytorch_image: str, tmp_path: Path) -> None:
    proc = run_lem("campaign", write(tmp_path / "one.yaml", ONE), "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    (entry,) = load_manifest(only_campaign_dir(tmp_path / "out")).entries
    assert entry.runner == "docker"
    notices = [line for line in proc.stderr.splitlines() if line.startswith("notice")]
    assert notices == [f"notice: settings from {tmp_path / '.lem-config.yaml'}"], explain(proc)


def test_auto_runs_locally_without_the_image(pytorch_image: str, tmp_path: Path) -> None:
    env = image_env(LEM_IMAGE_TAG="no-such-tag")
    proc = run_lem(
        "campaign", write(tmp_path / "one.yaml", ONE), "-o", "out", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, explain(proc)
    (entry,) = load_manifest(only_campaign_dir(tmp_path / "out")).entries
    assert entry.runner == "local"
    assert "notice: running locally: no image for pytorch" in proc.stderr, explain(proc)


def test_auto_runs_locally_with_a_stale_image(stale_image: str, tmp_path: Path) -> None:
    env = image_env(LEM_IMAGE_TAG=stale_image.rpartition(":")[2])
    proc = run_lem(
        "campaign", write(tmp_path / "one.yaml", ONE), "-o", "out", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, explain(proc)
    (entry,) = load_manifest(only_campaign_dir(tmp_path / "out")).entries
    assert entry.runner == "local"
    assert (
        "notice: running locally: the image for pytorch was built from another version"
        in proc.stderr
    ), explain(proc)


def test_cold_start_turns_persistent_into_ephemeral(pytorch_image: str, tmp_path: Path) -> None:
    text = ONE + "runner: docker-persistent\ncold_start: true\n"
    proc = run_lem("campaign", write(tmp_path / "one.yaml", text), "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    (entry,) = load_manifest(only_campaign_dir(tmp_path / "out")).entries
    assert entry.runner == "docker"
    assert "notice: cold_start: every experiment gets a fresh container" in proc.stderr


def test_missing_image_is_refused_with_the_build_command(
    pytorch_image: str, tmp_path: Path
) -> None:
    env = image_env(LEM_IMAGE_TAG="no-such-tag")
    campaign = write(tmp_path / "one.yaml", ONE)
    proc = run_lem("campaign", campaign, "-o", "out", "--runner", "docker", cwd=tmp_path, env=env)
    assert proc.returncode == 2, explain(proc)
    assert "image llenergymeasure-pytorch:no-such-tag is missing" in proc.stderr
    make = shlex.join(["make", "-C", str(REPO), "images", "BACKENDS=pytorch"])
    compose = (
        f"LEM_SCHEMA_FINGERPRINT={schema_fingerprint()} LEM_IMAGE_TAG=no-such-tag "
        f"docker compose -f {REPO / 'compose.yaml'} build pytorch"
    )
    assert make in proc.stderr and compose in proc.stderr, explain(proc)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_stale_image_is_refused(stale_image: str, tmp_path: Path) -> None:
    env = image_env(LEM_IMAGE_TAG=stale_image.rpartition(":")[2])
    campaign = write(tmp_path / "one.yaml", ONE)
    proc = run_lem("campaign", campaign, "-o", "out", "--runner", "docker", cwd=tmp_path, env=env)
    assert proc.returncode == 2, explain(proc)
    assert f"image {stale_image} was built from another version of llenergymeasure" in (proc.stderr)
    assert f"schema fingerprint {'0' * 16}, this host has {schema_fingerprint()}" in proc.stderr
    assert "rebuild it: build it with `make -C" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_file_no_container_can_see_is_refused(pytorch_image: str, tmp_path: Path) -> None:
    prompts = write(tmp_path / "data" / "prompts.jsonl", '{"prompt": "hello"}\n')
    campaign = write(
        tmp_path / "campaigns" / "one.yaml",
        ONE + f"  prompts: {{source: jsonl, path: {prompts}}}\n",
    )
    proc = run_lem("campaign", campaign, "-o", "out", "--runner", "docker", cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert f"not: prompt file {prompts}. Move them there, or use --runner local" in proc.stderr
