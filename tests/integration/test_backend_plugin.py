"""A backend added through its descriptor alone (issue 13.3): tests/integration/toy_backend.py
is registered with LEM_BACKENDS, nothing in the package names it, and a real `lem campaign`
validates, expands, lists and runs it through the local runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lem_cli import (
    backends_env,
    explain,
    load_manifest,
    only_campaign_dir,
    read_json,
    run_lem,
    write,
)

pytestmark = pytest.mark.integration

TOY_ENV = backends_env("toy_backend:TOY")
N_PROMPTS, BATCH, OUTPUT_TOKENS = 4, 2, 6
CAMPAIGN = f"""\
name: toy
cycles: 1
skip_invalid: true
base:
  backend: toy
  n_prompts: {N_PROMPTS}
  batch_size: {BATCH}
  max_output_tokens: {OUTPUT_TOKENS}
  warmup: {{runs: 1}}
grid:
  toy.width: [8, 32]
  precision: [fp32, fp16]
"""


def test_a_backend_known_only_from_its_descriptor_runs_a_campaign(tmp_path: Path) -> None:
    campaign = write(tmp_path / "toy.yaml", CAMPAIGN)
    proc = run_lem("campaign", campaign, "-o", tmp_path / "out", cwd=tmp_path, env=TOY_ENV)
    assert proc.returncode == 0, explain(proc)
    # The descriptor's capabilities: fp16 is not the toy's, so those grid points are skipped.
    skipped = "backend 'toy' does not support precision 'fp16'; it supports: fp32"
    assert proc.stderr.count(skipped) == 2, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    entries = load_manifest(campaign_dir).entries
    assert [e.status for e in entries] == ["done", "done"], [(e.key, e.status) for e in entries]
    # As JSON: this test's own process has not registered the toy backend.
    results = [read_json(campaign_dir / e.result_path) for e in entries if e.result_path]
    # the scoped grid key reached the engine through its settings section
    assert sorted(r["config"]["toy"]["width"] for r in results) == [8, 32]
    assert sorted(r["offline"]["engine_settings"]["width"] for r in results) == [8, 32]
    for result in results:
        assert result["experiment_id"].startswith("toy-")
        assert result["config"]["backend"] == "toy"
        assert result["output_tokens"] == N_PROMPTS * OUTPUT_TOKENS
        assert result["n_requests"] == N_PROMPTS
        assert result["measured_duration_s"] > 0
        environment = result["environment"]
        assert environment["device"] == "cpu (toy engine)"
        assert "numpy" in environment["library_versions"]  # the descriptor's distributions
        assert result["offline"]["flops_estimate"] > 0


def test_server_mode_on_a_backend_without_a_server_is_refused(tmp_path: Path) -> None:
    campaign = write(
        tmp_path / "serve.yaml",
        "name: s\nbase:\n  backend: toy\n  mode: server\n"
        "  server: {levels: [{rate_rps: 1}], requests_per_level: 4}\n",
    )
    proc = run_lem("campaign", campaign, "--dry-run", cwd=tmp_path, env=TOY_ENV)
    assert proc.returncode == 2, explain(proc)
    assert "serve.yaml, line 4" in proc.stderr, explain(proc)
    assert "mode: server is not supported on backend 'toy'; backends that support it: " in (
        proc.stderr
    )
    assert "pytorch, vllm, tensorrt" in proc.stderr and "Traceback" not in proc.stderr


def test_config_list_and_doctor_read_the_descriptor(tmp_path: Path) -> None:
    listing = run_lem("config", "list", "--json", cwd=tmp_path, env=TOY_ENV)
    assert listing.returncode == 0, explain(listing)
    tables = json.loads(listing.stdout)
    keys = {row["key"]: row for row in tables["toy"]}
    assert keys["toy.width"]["default"] == "16"
    assert keys["precision"]["type"] == "fp32"  # only what its capabilities allow
    assert not any(k.startswith("pytorch.") for k in keys)
    doctor = run_lem("doctor", "--json", cwd=tmp_path, env=TOY_ENV)
    rows = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert rows["backend toy"]["status"] == "ok", rows["backend toy"]
    assert rows["backend toy"]["detail"].startswith("numpy ")


def test_an_unloadable_plugin_is_a_clear_config_error(tmp_path: Path) -> None:
    proc = run_lem("config", "list", cwd=tmp_path, env={"LEM_BACKENDS": "no_such_module:TOY"})
    assert proc.returncode == 2, explain(proc)
    assert "LEM_BACKENDS: cannot import no_such_module" in proc.stderr
    assert "Traceback" not in proc.stderr
