"""Worker arithmetic (latency statistics) and the spec gate. Energy figures are tested through
the measurement session in test_measure_session.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llenergymeasure.backends.base import RequestOutput
from llenergymeasure.config import ExperimentConfig
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import ERROR_FILE
from llenergymeasure.errors import ConfigError
from llenergymeasure.results.schema import ErrorRecord, LatencyStats, schema_fingerprint
from llenergymeasure.worker.__main__ import load_spec, main
from llenergymeasure.worker.latency import latency_stats_of


def outputs(*tokens_and_latency: tuple[int, float]) -> list[RequestOutput]:
    return [
        RequestOutput(input_tokens=5, output_tokens=t, latency_s=s) for t, s in tokens_and_latency
    ]


# --------------------------------------------------------------------------- latency stats


def latency_stats(outs: list[RequestOutput]) -> LatencyStats:
    """What the result's `latency` is made of: each request's latency."""
    return latency_stats_of([o.latency_s for o in outs])


def test_latency_stats_percentiles() -> None:
    stats = latency_stats(outputs((1, 1.0), (1, 2.0), (1, 3.0), (1, 4.0)))
    assert stats.mean_s == pytest.approx(2.5)
    assert stats.p50_s == pytest.approx(2.5)
    assert stats.p90_s == pytest.approx(3.7)  # linear interpolation between 3.0 and 4.0
    assert stats.p99_s == pytest.approx(3.97)
    assert stats.max_s == 4.0


def test_latency_stats_ignore_input_order() -> None:
    a = latency_stats(outputs((1, 0.3), (1, 0.1), (1, 0.2)))
    b = latency_stats(outputs((1, 0.1), (1, 0.2), (1, 0.3)))
    assert a == b
    assert a.p50_s == pytest.approx(0.2)


def test_latency_stats_single_request() -> None:
    stats = latency_stats(outputs((8, 0.75)))
    assert stats.model_dump() == {
        "mean_s": 0.75,
        "p50_s": 0.75,
        "p90_s": 0.75,
        "p99_s": 0.75,
        "max_s": 0.75,
    }


def test_latency_stats_are_plain_floats() -> None:
    stats = latency_stats(outputs((1, 1.0), (1, 2.0)))
    assert all(type(v) is float for v in stats.model_dump().values())
    assert json.loads(stats.model_dump_json())["max_s"] == 2.0


def test_latency_stats_ordering_invariant() -> None:
    lat = [0.05 * i for i in range(1, 101)]
    stats = latency_stats(outputs(*((1, s) for s in lat)))
    assert min(lat) <= stats.p50_s <= stats.p90_s <= stats.p99_s <= stats.max_s == max(lat)


# ----------------------------------------------------------------------------- spec loading


def spec_json(tmp_path: Path, **overrides: object) -> Path:
    spec = ExperimentSpec(
        schema_fingerprint=schema_fingerprint(),
        experiment_id=ExperimentConfig().experiment_id(),
        campaign_id="c_1",
        campaign_name="c",
        cycle=1,
        total_cycles=1,
        attempt=1,
        output_dir=str(tmp_path / "out"),
        base_dir=str(tmp_path),
        cache_dir=str(tmp_path / ".cache"),
        config=ExperimentConfig(),
    )
    path = tmp_path / "exp.json"
    path.write_text(spec.model_copy(update=overrides).model_dump_json(), encoding="utf-8")
    return path


def test_load_spec_accepts_matching_fingerprint(tmp_path: Path) -> None:
    spec = load_spec(spec_json(tmp_path))
    assert spec.schema_fingerprint == schema_fingerprint()
    assert spec.config == ExperimentConfig()


def test_load_spec_rejects_other_fingerprint(tmp_path: Path) -> None:
    path = spec_json(tmp_path, schema_fingerprint="deadbeefdeadbeef")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert "deadbeefdeadbeef" in message
    assert schema_fingerprint() in message
    assert str(path) in message


def test_load_spec_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read experiment spec"):
        load_spec(tmp_path / "nope.json")


@pytest.mark.parametrize("text", ["{", "[]", '{"experiment_id": "x"}'])
def test_load_spec_invalid_content(tmp_path: Path, text: str) -> None:
    path = tmp_path / "exp.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="is not a valid experiment spec"):
        load_spec(path)


def test_load_spec_rejects_invalid_config_inside(tmp_path: Path) -> None:
    path = spec_json(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["config"]["batch_size"] = 0
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="batch_size"):
        load_spec(path)


def test_schema_fingerprint_is_stable_hex() -> None:
    assert schema_fingerprint() == schema_fingerprint()
    assert len(schema_fingerprint()) == 16
    int(schema_fingerprint(), 16)


def test_worker_main_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["a.json", "b.json"]) == 2
    assert "usage: lem-worker [--force] EXP_JSON" in capsys.readouterr().err


def test_worker_main_refuses_foreign_spec_and_writes_error_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEM_PARENT_PID", raising=False)
    path = spec_json(tmp_path, schema_fingerprint="0000000000000000")
    assert main([str(path)]) == 2
    record = ErrorRecord.model_validate_json((tmp_path / ERROR_FILE).read_bytes())
    assert record.category == "config"
    assert record.error_type == "ConfigError"
    assert "0000000000000000" in record.message
    assert record.experiment_id is None  # the spec was never accepted
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ fast exit

EXIT_SCRIPT = """
import atexit, multiprocessing, sys, time
from pathlib import Path
from llenergymeasure.worker.__main__ import _exit_now

marker = Path(sys.argv[1])
atexit.register(marker.write_text, "teardown ran")
if sys.argv[2] == "child":
    child = multiprocessing.Process(target=time.sleep, args=(120,), daemon=True)
    child.start()
    print(child.pid, flush=True)
_exit_now(3)
"""


def _run_exit_script(tmp_path: Path, mode: str) -> tuple[int, str, Path]:
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT, encoding="utf-8")
    marker = tmp_path / "teardown"
    proc = subprocess.run(
        [sys.executable, str(script), str(marker), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, marker


def test_exit_skips_the_interpreter_teardown(tmp_path: Path) -> None:
    code, _, marker = _run_exit_script(tmp_path, "alone")
    assert code == 3
    assert not marker.exists()  # atexit handlers (and module teardown) did not run


def test_exit_with_a_live_child_runs_the_normal_exit_that_ends_it(tmp_path: Path) -> None:
    code, out, marker = _run_exit_script(tmp_path, "child")
    assert code == 3
    assert marker.read_text() == "teardown ran"
    child = int(out.strip())
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)  # gone (or a zombie)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_worker_process_exit_code_for_an_unusable_spec(tmp_path: Path) -> None:
    """`python -m llenergymeasure.worker` (what the local runner starts) exits through the fast
    path with main's code: 2 for a spec it cannot use, with a message, not a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "llenergymeasure.worker", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "cannot read experiment spec" in proc.stderr
    assert "Traceback" not in proc.stderr
