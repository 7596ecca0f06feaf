"""Request traces (`server.trace`) and server.url refused before anything runs: a bad trace
line names its file and line, a non-loopback or unreachable URL its campaign; `lem` exits 2
with one line and no campaign directory. The CSV converter writes what the reader takes, and
prompts are cut to a trace's lengths under the built-in model's real tokenizer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_errors import one_line, run_cli

from llenergymeasure.backends.common import load_tokenizer
from llenergymeasure.config.trace import MAX_TRACE_BYTES, read_trace
from llenergymeasure.datasets import builtin_prompts, sized_prompt
from llenergymeasure.errors import ConfigError
from llenergymeasure.models import resolve_model

REPO = Path(__file__).resolve().parents[2]
GOOD = '{"t_s": 0, "input_tokens": 8, "output_tokens": 4}\n'


@pytest.mark.parametrize(
    ("second_line", "needle"),
    [
        ('{"t_s": -1, "input_tokens": 8, "output_tokens": 4}', "t_s must be seconds in [0"),
        ('{"t_s": NaN, "input_tokens": 8, "output_tokens": 4}', "t_s must be seconds"),
        ('{"t_s": "1", "input_tokens": 8, "output_tokens": 4}', "t_s must be seconds"),
        ('{"input_tokens": 8, "output_tokens": 4}', "t_s must be seconds"),
        ('{"t_s": 1, "input_tokens": 8}', "output_tokens must be an integer in [1,"),
        ('{"t_s": 1, "input_tokens": 0, "output_tokens": 4}', "input_tokens must be an integer"),
        ('{"t_s": 1, "input_tokens": 2.5, "output_tokens": 4}', "input_tokens must be an integer"),
        ('{"t_s": 1, "output_tokens": 4}', "exactly one of input_tokens or prompt"),
        ('{"t_s": 1, "prompt": "hi", "input_tokens": 3, "output_tokens": 4}', "exactly one of"),
        ('{"t_s": 1, "prompt": " ", "output_tokens": 4}', "prompt must be non-empty text"),
        ('{"t_s": 1, "input_tokens": 8, "output_tokens": 4, "ts": 2}', "unknown key 'ts'"),
        ("[1, 2]", "not a JSON object"),
        ("{t_s: 1}", "invalid JSON"),
    ],
)
def test_a_bad_trace_line_names_its_file_and_line(
    tmp_path: Path, second_line: str, needle: str
) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(GOOD + "\n" + second_line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_trace(path)
    assert f"{path}, line 3: " in str(caught.value) and needle in str(caught.value)


def test_a_trace_that_is_not_a_small_regular_file_is_refused(tmp_path: Path) -> None:
    cases = (("dir", "not a regular file"), ("big", "bytes >"), ("gone", "not found"))
    for problem, needle in cases:
        path = tmp_path / problem
        if problem == "dir":
            path.mkdir()
        elif problem == "big":
            with path.open("wb") as f:
                f.truncate(MAX_TRACE_BYTES + 1)  # sparse: no disk used
        with pytest.raises(ConfigError, match=needle):
            read_trace(path)


def _campaign(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "name: serve\nbase:\n  mode: server\n  n_prompts: 4\n  server:\n" + server,
        encoding="utf-8",
    )
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens


@pytest.mark.parametrize(
    ("server", "trace", "needle"),
    [
        (
            "    url: http://192.0.2.1:8000\n    trace: t.jsonl\n",
            GOOD,
            "serve.yaml, line 6, at base.server.url: host '192.0.2.1' is not loopback",
        ),
        (
            "    trace: t.jsonl\n",
            GOOD + '{"t_s": 2, "input_tokens": 8, "output_tokens": 4}\n'
            '{"t_s": 1.5, "input_tokens": 8, "output_tokens": 4}\n',
            "t.jsonl, line 3: t_s 1.5 is before the line above's 2.0; sort by t_s",
        ),
        (
            "    url: http://127.0.0.1:{port}\n    trace: t.jsonl\n",
            GOOD,
            "server.url http://127.0.0.1:{port} does not answer GET /v1/models",
        ),
    ],
    ids=["remote-url", "unsorted-trace", "unreachable-url"],
)
def test_lem_refuses_a_bad_endpoint_or_trace_before_anything_runs(
    tmp_path: Path, server: str, trace: str, needle: str
) -> None:
    port = _closed_port()
    (tmp_path / "t.jsonl").write_text(trace, encoding="utf-8")
    path = _campaign(tmp_path, server.replace("{port}", str(port)))
    proc = run_cli("campaign", path.name, "--yes", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle.replace("{port}", str(port)) in one_line(proc.stderr), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve.yaml", "t.jsonl"]


def test_csv_converter_writes_a_trace_the_reader_takes(tmp_path: Path) -> None:
    csv = tmp_path / "azure.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:47.25,100,20\n"
        "2023-11-16 18:15:46.50,12,3\n"
        "2023-11-16 18:15:48.00,0,5\n",
        encoding="utf-8",
    )
    out = tmp_path / "trace.jsonl"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "trace_from_csv.py"), str(csv), str(out)],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dropped 1 rows" in proc.stderr
    trace = read_trace(out)
    assert [(r.t_s, r.input_tokens, r.output_tokens) for r in trace] == [
        (0.0, 12, 3),
        (0.75, 100, 20),
    ]


def test_the_shipped_trace_reads_and_prompts_take_its_exact_lengths() -> None:
    trace = read_trace(REPO / "campaigns" / "traces" / "synthetic.jsonl")
    tokenizer = load_tokenizer(resolve_model("builtin:tiny-llama"))
    source = builtin_prompts()
    for i, r in enumerate(trace):
        assert r.input_tokens is not None
        prompt = sized_prompt(tokenizer, source[i % len(source)], r.input_tokens)
        assert len(tokenizer.encode(prompt, add_special_tokens=False)) == r.input_tokens
