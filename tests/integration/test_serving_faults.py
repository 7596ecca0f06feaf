"""Server mode against a misbehaving server (issue 25), through a real `lem campaign`: the
"server" is the stand-in (tests/unit/serving_standin.py, no model) launched by a backend
registered through the plugin hook (toy_backend.STANDIN), its misbehaviour picked by the
campaign's passthrough_kwargs. A malformed chunk costs its request, a trickled /health is cut
at startup_timeout_s, a trickled stream at request_timeout_s, and proxy variables are ignored."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import (
    NO_GAPS_SETTINGS,
    backends_env,
    explain,
    load_manifest,
    only_campaign_dir,
    run_lem,
    write,
)
from serving_checks import check_server_gone

pytestmark = pytest.mark.integration

ENV = backends_env("toy_backend:STANDIN")


def campaign(
    passthrough: str, server: str = "", levels: str = "[{rate_rps: 40}, {concurrency: 2}]"
):
    """Two levels of 20 requests after one warm-up request: the stand-in's request 1 is the
    warm-up, 2-21 the first level, 22-41 the second."""
    return f"""name: faults
cycles: 1
runner: local
{NO_GAPS_SETTINGS}base:
  model: builtin:tiny-llama
  backend: standin
  mode: server
  n_prompts: 4
  max_output_tokens: 4
  measurement: {{baseline: {{duration_s: 0.5}}}}
  passthrough_kwargs: {passthrough}
  server:
    levels: {levels}
    arrival: constant
    requests_per_level: 20
    cooldown_s: 0
    warmup_requests: 1
    startup_timeout_s: 60
{server}"""


def run(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    proc = run_lem(
        "campaign", write(tmp_path / "c.yaml", text), "--yes", cwd=tmp_path, env=ENV | (env or {})
    )
    directory = only_campaign_dir(tmp_path / "results")
    return proc, directory, pd.read_csv(directory / "results.csv")


def test_a_malformed_chunk_costs_its_request_and_fails_its_level_everywhere(
    tmp_path: Path,
) -> None:
    # request 21 (the first level's last) gets the bad chunk: 1 of 20 > max_failed_fraction 0.01
    # (each malformed shape of issue 25: tests/unit/test_serving.py)
    proc, directory, rows = run(tmp_path, campaign("{bad_chunk: '[1, 2, 3]', bad_every: 21}"))
    assert proc.returncode == 1, explain(proc)  # a failed level is a failed campaign
    assert list(rows["level"]) == ["r40", "c2"] and list(rows["status"]) == ["failed", "done"]
    reason = rows["error"][0]
    assert "1 of 20 requests failed (Malformed: chunk" in reason and "0.01" in reason, reason
    assert rows["requests_ok"].tolist() == [19, 20]
    assert "1 server level(s) failed" in proc.stdout and "failed level r40" in proc.stdout
    (result,) = directory.glob("*/cycle-1/result.json")
    server = json.loads(result.read_text())["server"]
    check_server_gone(server)
    # every other face names the failed level: lem results (table, -q, --json), lem report
    for args in ((), ("-q",), ("-v",)):
        shown = run_lem("results", directory, *args, cwd=tmp_path, env=ENV)
        assert "1 server level(s) failed" in shown.stdout, explain(shown)
        assert "failed level r40 of " in shown.stdout, explain(shown)
    as_json = json.loads(run_lem("results", directory, "--json", cwd=tmp_path, env=ENV).stdout)
    assert [(lv["level"], lv["cycle"]) for lv in as_json["failed_levels"]] == [("r40", 1)]
    report = run_lem("report", directory, cwd=tmp_path, env=ENV)
    assert report.returncode == 0, explain(report)
    html = next(directory.rglob("*.html")).read_text()
    assert "Failed runs and levels" in html and " level r40 cycle 1: failed: " in html
    # each server figure is marked with the level it leaves out
    assert html.count("Failed, not drawn: ") >= 2 and "level r40 cycle 1</p>" in html


def test_a_trickled_health_answer_is_cut_at_startup_timeout(tmp_path: Path) -> None:
    text = campaign("{trickle_health: true}").replace(
        "startup_timeout_s: 60", "startup_timeout_s: 3"
    )
    proc, directory, _ = run(tmp_path, text)
    assert proc.returncode == 1, explain(proc)
    (entry,) = load_manifest(directory).entries
    assert entry.status == "failed" and "not healthy within startup_timeout_s=3 s" in (
        entry.error or ""
    ), entry.error


def test_a_trickled_stream_is_cut_at_request_timeout_and_keeps_the_level_before(
    tmp_path: Path,
) -> None:
    # from request 22 (the second level) the stand-in sends `: keepalive` lines forever
    text = campaign(
        "{keepalive_after: 21}",
        "    request_timeout_s: 2\n",
        levels="[{rate_rps: 40}, {rate_rps: 40}]",
    )
    proc, _, rows = run(tmp_path, text)
    assert proc.returncode == 1, explain(proc)
    assert list(rows["status"]) == ["done", "failed"], rows
    assert rows["requests_ok"].tolist() == [20, 0]
    assert "20 of 20 requests failed (request exceeded request_timeout_s=2 s)" in rows["error"][1]


def test_proxy_variables_do_not_divert_loopback_traffic(tmp_path: Path) -> None:
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen(16)
        proxy.setblocking(False)
        url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        env = {k: url for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY")}
        proc, _, rows = run(tmp_path, campaign("{}"), env | {"NO_PROXY": "", "no_proxy": ""})
        assert proc.returncode == 0, explain(proc)
        assert rows["requests_ok"].tolist() == [20, 20]
        with pytest.raises(BlockingIOError):  # nothing ever connected to the proxy
            proxy.accept()


def test_a_server_that_exits_mid_level_is_run_again_by_retry_failed(tmp_path: Path) -> None:
    # the stand-in exits on request 22, the second level's first: exit 1, the first level kept
    proc, directory, rows = run(tmp_path, campaign("{exit_after: 21}"))
    assert proc.returncode == 1, explain(proc)
    assert list(rows["status"]) == ["done", "failed"], rows
    assert "server exited with code 3 during level c2 after " in rows["error"][1]
    assert "0 done, 1 failed" in proc.stdout and "failed level c2 of " in proc.stdout
    again = run_lem("resume", "--retry-failed", "--json", directory, cwd=tmp_path, env=ENV)
    assert again.returncode == 1, explain(again)  # the same server fails the same way
    summary = json.loads(again.stdout)
    assert [lv["level"] for lv in summary["failed_levels"]] == ["c2"], summary
    (entry,) = load_manifest(directory).entries
    assert entry.attempts == 2 and entry.status == "failed", entry
    assert list(pd.read_csv(directory / "results.csv")["status"]) == ["done", "failed"]
